"""The memory plan: per-rank bytes by hand for each ZeRO stage, and plans refused with the numbers named."""
import pytest

from rlhf.config import ZeroSettings, load_config
from rlhf.memory_plan import (GIB, MemoryPlanError, check_fits, count_parameters, frozen_memory, stage_plan,
                              trainable_memory)


def test_bytes_per_rank_follow_the_zero_stage_by_hand():
    zero = lambda stage, **kw: ZeroSettings(zero_stage=stage, **kw)
    # fp32, 1000 parameters: weights 4, gradients 4, Adam 8 (+ fp32 master 4 from stage 1 on) bytes each
    assert trainable_memory("p", 1000, 4, 2, zero(0)).device == {"weights": 4000, "gradients": 4000, "optimizer": 8000}
    assert trainable_memory("p", 1000, 4, 2, zero(1)).device == {"weights": 4000, "gradients": 4000, "optimizer": 6000}
    assert trainable_memory("p", 1000, 4, 2, zero(2)).device == {"weights": 4000, "gradients": 2000, "optimizer": 6000}
    assert trainable_memory("p", 1000, 4, 4, zero(3)).device == {"weights": 1000, "gradients": 1000, "optimizer": 3000}
    # bf16 at stage 0 keeps an fp32 master too: 2 + 2 + 12
    assert trainable_memory("p", 1000, 2, 1, zero(0)).device_total == 16000
    offloaded = trainable_memory("p", 1000, 4, 2, zero(3, offload_optimizer=True, offload_params=True))
    assert offloaded.device == {"gradients": 2000} and offloaded.host == {"optimizer": 6000, "weights": 2000}
    assert frozen_memory("r", 1000, 2, 4, sharded=True).device_total == 500
    assert frozen_memory("r", 1000, 2, 4, sharded=False).device_total == 2000


def test_parameters_are_counted_from_the_config_alone(tmp_path):
    cfg = load_config(None, ["--model.cache_dir", str(tmp_path)], stage="ppo")
    # the default tiny Llama: 4 specials + 89 characters (the backtick among them) of vocabulary, 2 layers of width 64, untied head
    vocab, h, layers = 93, 64, 2
    per_layer = 4 * h * h + 3 * h * 4 * h + 2 * h
    assert count_parameters("tiny", False, cfg.model.tiny)[0] == 2 * vocab * h + layers * per_layer + h
    assert count_parameters("tiny", True, cfg.model.tiny)[0] == vocab * h + layers * per_layer + h + h + 1
    roles = {r.role: r for r in stage_plan(cfg, "ppo")}
    assert set(roles) == {"policy", "rollout", "reference", "value"}          # no reward model: a function
    assert not list(tmp_path.iterdir())                                       # nothing was made


def test_plans_that_cannot_fit_are_refused_naming_the_numbers():
    policy = trainable_memory("policy", 10**9, 2, 1, ZeroSettings(zero_stage=0))     # 16 GB per rank
    with pytest.raises(MemoryPlanError, match=r"needs about 15\.4 GiB of host memory .* has 8\.0 GiB available; fix"):
        check_fits([policy], 8 * GIB, None, set(), "fix")
    check_fits([policy], 16 * GIB, None, set(), "fix")
    with pytest.raises(MemoryPlanError, match=r"each policy rank needs about 15\.9 GiB of GPU memory .* has 12\.0 GiB"):
        check_fits([policy], 64 * GIB, 12 * GIB, {"policy"}, "fix")
    sharded = trainable_memory("policy", 10**9, 2, 8, ZeroSettings(zero_stage=3, offload_optimizer=True))
    check_fits([sharded], 64 * GIB, 12 * GIB, {"policy"}, "fix")

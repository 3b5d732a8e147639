"""Generation, the experience batch, checkpoints, reward functions and models, each in one process."""
import dataclasses
import math
import os

import pytest
import torch

from rlhf.sharding import shard

from rlhf.batches import collate_rankings, unflatten_scores
from rlhf.checkpoint import CheckpointManager
from rlhf.experience import Experience
from rlhf.forward import checkpoints_activations, ranking_scores, token_scores
from rlhf.generation import HFGenerateEngine, SamplingParams, response_mask_from_tokens
from rlhf.models import (attention_kernel, build_char_tokenizer, load_causal_lm, load_scalar_model, load_tokenizer,
                         make_tiny_model)
from rlhf.numerics import BadStepGuard, NumericalFaultError
from rlhf.optim import adamw_settings
from rlhf.reward_function import RewardFunctionError, call_reward_function, load_reward_function


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "m"))


def test_response_mask_stops_at_first_eos_even_when_pad_is_eos():
    eos = 1
    responses = torch.tensor([[5, 6, 1, 1, 1], [5, 6, 7, 8, 9], [1, 1, 1, 1, 1]])
    mask, ended = response_mask_from_tokens(responses, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_generate_left_pads_samples_n_and_is_seeded(tiny):
    tokenizer = load_tokenizer(tiny)
    engine = HFGenerateEngine(load_causal_lm(tiny), tokenizer, torch.device("cpu"))
    ids = tokenizer(["repeat 1:", "x:"], padding=True, return_tensors="pt")
    params = SamplingParams(max_new_tokens=6, temperature=0.7, top_k=20, n_samples_per_prompt=3)
    a = engine.generate(ids.input_ids, ids.attention_mask, torch.tensor([4, 9]), params, seed=7)
    b = engine.generate(ids.input_ids, ids.attention_mask, torch.tensor([4, 9]), params, seed=7)
    assert torch.equal(a.sequences, b.sequences)
    assert a.sequences.shape == (6, ids.input_ids.shape[1] + 6) and a.prompt_index.tolist() == [4, 4, 4, 9, 9, 9]
    assert a.attention_mask[3, 0] == 0                         # "x:" is left-padded
    masked_out = a.responses[a.response_mask == 0]
    assert (masked_out == tokenizer.pad_token_id).all()
    # rollout.micro_batch_size: 4 sequences at a time (4 + 2), one random stream; as large as the batch: unchanged
    small = dataclasses.replace(params, micro_batch_size=4)
    c = engine.generate(ids.input_ids, ids.attention_mask, torch.tensor([4, 9]), small, seed=7)
    assert torch.equal(c.sequences, engine.generate(ids.input_ids, ids.attention_mask, torch.tensor([4, 9]), small,
                                                    seed=7).sequences)
    assert c.sequences.shape == a.sequences.shape and torch.equal(c.prompt_index, a.prompt_index)
    assert not torch.equal(c.sequences, a.sequences)            # two generate calls: another draw
    assert (c.responses[c.response_mask == 0] == tokenizer.pad_token_id).all()
    whole = dataclasses.replace(params, micro_batch_size=6)
    assert torch.equal(engine.generate(ids.input_ids, ids.attention_mask, torch.tensor([4, 9]), whole, 7).sequences,
                       a.sequences)
    # the engine's log-probs of its samples: the model's at the temperature (not top-k's), as the policy scores them
    with torch.no_grad():
        logits = engine.model(input_ids=a.sequences, attention_mask=a.attention_mask,
                              position_ids=a.position_ids).logits[:, a.prompt_length - 1:-1]
    expected = torch.log_softmax(logits / 0.7, dim=-1).gather(2, a.responses.unsqueeze(2)).squeeze(2)
    assert a.rollout_logprobs.shape == a.response_mask.shape
    assert torch.allclose(a.rollout_logprobs, expected * a.response_mask, atol=1e-5)


def test_experience_shard_select_concat():
    exp = Experience(sequences=torch.arange(12).view(4, 3), attention_mask=torch.ones(4, 3, dtype=torch.long),
                     response_mask=torch.ones(4, 1), ends_with_eos=torch.ones(4, dtype=torch.bool),
                     prompt_index=torch.arange(4), prompt_length=2)
    parts = [shard(exp, r, 2) for r in range(2)]
    assert parts[1].prompt_index.tolist() == [2, 3] and parts[0].values is None
    assert torch.equal(Experience.concat(parts).sequences, exp.sequences)
    assert exp.responses.tolist() == [[2], [5], [8], [11]]
    left_padded = exp.replace(attention_mask=torch.tensor([[0, 1, 1]] * 4))
    assert left_padded.position_ids[0].tolist() == [0, 0, 1]


def test_checkpoint_commit_is_atomic_and_prunes(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        folder = manager.begin(step)
        (folder / "policy").mkdir()
        manager.commit(folder, step, {"step": step})
    assert [p.name for p in manager.complete()] == ["step_000002", "step_000003"]
    crashed = manager.begin(4)                     # a crash mid-write leaves only the .tmp folder
    (crashed / "half").write_text("x")
    assert manager.latest().name == "step_000003" and manager.driver_state(manager.latest())["step"] == 3
    manager.begin(4)                               # the next attempt clears the leftover
    assert len(list(manager.root.glob(".step_*.tmp"))) == 1


def bad_raises(prompts, responses):
    raise KeyError("label")


def bad_shape(prompts, responses):
    return [0.0]


def bad_value(prompts, responses):
    return [math.nan] * len(responses)


def test_reward_function_errors_are_one_line():
    fn = load_reward_function("rlhf.data.toy:repeat_digit_reward")
    assert call_reward_function(fn, "s", ["repeat 3:"], ["33x"]).tolist() == pytest.approx([2 / 3])
    cases = {"tests.core.test_core_pieces:bad_raises": "raised KeyError",
             "tests.core.test_core_pieces:bad_shape": "returned shape (1,); expected (2,)",
             "tests.core.test_core_pieces:bad_value": "non-finite score at index 0"}
    for spec, expected in cases.items():
        with pytest.raises(RewardFunctionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            call_reward_function(load_reward_function(spec), spec, ["a", "b"], ["x", "y"])
    with pytest.raises(RewardFunctionError, match="cannot import module 'no_such_module'"):
        load_reward_function("no_such_module:f")
    with pytest.raises(RewardFunctionError, match="has no function 'nope'"):
        load_reward_function("rlhf.data.toy:nope")


def test_char_tokenizer_and_scalar_head(tiny, tmp_path):
    tokenizer = build_char_tokenizer()
    ids = tokenizer("ab 7").input_ids
    assert tokenizer.decode(ids) == "ab 7" and tokenizer.padding_side == "left"
    scalar = load_scalar_model(tiny)
    assert scalar(input_ids=torch.tensor([ids])).logits.shape == (1, 4, 1)
    scalar.save_pretrained(tmp_path / "rm")
    again = load_scalar_model(str(tmp_path / "rm"))          # the head is restored, not re-initialised
    assert torch.equal(again.score.weight, scalar.score.weight)
    assert os.path.exists(os.path.join(tiny, "tokenizer.json"))


def test_bad_step_guard_counts_skipped_updates_in_a_row_per_role():
    guard = BadStepGuard(max_bad_steps=3)
    guard.observe("policy", [False, True], 1, "ckpt")
    guard.observe("value", [True, True], 1, "ckpt")            # each role has its own streak
    assert not guard.clean
    guard.observe("policy", [False, False], 2, "ckpt")          # a good update ends the policy's streak
    guard.observe("value", [False], 2, "ckpt")
    assert guard.clean
    guard.observe("policy", [False, True], 3, "ckpt")
    saved = guard.state_dict()
    with pytest.raises(NumericalFaultError, match=r"^policy: 3 optimizer updates in a row .* \(steps 3-4\) .*"
                                                  r"run.max_bad_steps = 3\. ckpt$"):
        guard.observe("policy", [True, True, False], 4, "ckpt")   # the third skip in a row, before the good one
    resumed = BadStepGuard(3)
    resumed.load_state_dict(saved)                            # a resumed run continues the streak it saved
    with pytest.raises(NumericalFaultError, match=r"\(steps 3-4\)"):
        resumed.observe("policy", [True, True], 4, "ckpt")


def test_attention_kernels_agree_and_auto_picks_by_device(tiny):
    assert attention_kernel("auto", torch.device("cpu")) == "eager"
    assert attention_kernel("auto", torch.device("cuda", 0)) == "sdpa"
    assert attention_kernel("sdpa", torch.device("cpu")) == "sdpa"
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    mask = (ids > 0).long()
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    outputs = {}
    for kernel in ("eager", "sdpa"):
        model = load_causal_lm(tiny, attention=kernel)
        assert model.config._attn_implementation == kernel
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        logits[mask.bool()].pow(2).mean().backward()
        outputs[kernel] = (logits[mask.bool()].detach(), model.model.layers[0].self_attn.q_proj.weight.grad)
    assert torch.allclose(outputs["eager"][0], outputs["sdpa"][0], atol=1e-5)
    assert torch.allclose(outputs["eager"][1], outputs["sdpa"][1], atol=1e-5)


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_ranking_scores_read_each_prompt_once_and_match_whole_sequences(tiny, kernel, checkpointing):
    groups = [([[5, 6, 7, 8, 9, 10], [5, 6, 7, 11], [5, 6, 12, 13, 14, 15, 16]], [1, 2, 3]),
              ([[20, 21, 22, 23, 24, 25, 26, 27], [20, 21, 22, 23, 24, 25, 30]], [2, 1])]
    batch = collate_rankings(groups, pad_id=0)
    assert batch.prefix_lengths.tolist() == [2, 6]
    model = load_scalar_model(tiny, attention=kernel)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        assert checkpoints_activations(model)
    model.train()
    valid = batch.ranks > 0
    results = []
    for score in (lambda: ranking_scores(model, batch, torch.device("cpu")),
                  lambda: unflatten_scores(token_scores(model, batch.input_ids[valid], batch.attention_mask[valid],
                                                        torch.device("cpu")), valid)):
        model.zero_grad()
        scores = score()
        (scores * torch.arange(1.0, 4.0)).sum().backward()
        results.append((scores.detach(), model.model.layers[0].self_attn.k_proj.weight.grad.clone()))
    (shared, shared_grad), (whole, whole_grad) = results
    assert shared[1, 2] == 0 and shared[0].abs().min() > 0
    assert torch.allclose(shared, whole, atol=1e-5) and not torch.equal(shared[0, 0], shared[0, 1])
    assert torch.allclose(shared_grad, whole_grad, atol=1e-5) and shared_grad.abs().sum() > 0


def test_fused_adamw_settings_take_the_same_step_as_the_loop():
    torch.manual_seed(0)
    start, grads = torch.randn(5, 3), [torch.randn(5, 3) for _ in range(3)]
    params = {}
    for fused in (False, True):
        settings = {**adamw_settings(), "fused": fused}
        param = torch.nn.Parameter(start.clone())
        optimizer = torch.optim.AdamW([param], lr=0.1, weight_decay=0.01, **settings)
        for grad in grads:
            param.grad = grad.clone()
            optimizer.step()
        params[fused] = param.detach()
    assert adamw_settings()["fused"] and adamw_settings()["betas"] == (0.9, 0.95)
    assert not torch.equal(params[True], start)
    assert torch.allclose(params[True], params[False], atol=1e-6)

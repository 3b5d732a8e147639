"""The pieces `rlhf bench` measures with, by hand: the columns a forward drops (`Experience.trimmed`) change no
output on real tokens, the FLOPs of each phase, and the parameters a token's forward multiplies by."""
import torch

from rlhf.experience import Experience, widen
from rlhf.flops import matmul_params, phase_flops
from rlhf.forward import response_token_stats, response_values
from rlhf.memory_plan import meta_model
from rlhf.models import TINY_VOCAB, load_causal_lm, load_scalar_model, make_tiny_model


def batch() -> Experience:
    # row 0: one pad before its prompt, a 2-token response; row 1: a full prompt, a 1-token response;
    # the batch is padded to a prompt of 3 and a response of 4
    return Experience(sequences=torch.tensor([[0, 5, 6, 7, 8, 0, 0], [4, 5, 6, 9, 0, 0, 0]]),
                      attention_mask=torch.tensor([[0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0]]),
                      response_mask=torch.tensor([[1., 1, 0, 0], [1., 0, 0, 0]]),
                      ends_with_eos=torch.tensor([True, True]), prompt_index=torch.tensor([0, 1]), prompt_length=3,
                      old_logprobs=torch.tensor([[-1., -2, 0, 0], [-3., 0, 0, 0]]))


def test_trimmed_drops_only_columns_that_are_padding_in_every_row():
    exp = batch()
    trimmed = exp.trimmed()
    assert trimmed.prompt_length == 3 and trimmed.response_length == 2      # row 1's prompt has no pad
    assert trimmed.sequences.tolist() == [[0, 5, 6, 7, 8], [4, 5, 6, 9, 0]]
    assert torch.equal(trimmed.old_logprobs, torch.tensor([[-1., -2], [-3., 0]]))
    assert torch.equal(trimmed.position_ids, exp.position_ids[:, :5])
    assert torch.equal(widen(trimmed.old_logprobs, 4), exp.old_logprobs)
    left = exp.select(slice(0, 1)).trimmed()                               # row 0 alone: its leading pad goes
    assert left.prompt_length == 2 and left.sequences.tolist() == [[5, 6, 7, 8]]


def test_forwards_on_trimmed_batches_equal_the_padded_ones(tmp_path):
    path = make_tiny_model(tmp_path / "tiny", num_layers=1, hidden_size=32)
    exp = batch()
    policy, value = load_causal_lm(str(path)).eval(), load_scalar_model(str(path)).eval()
    mask = exp.response_mask.bool()
    with torch.no_grad():
        logprobs, _ = response_token_stats(policy, exp, torch.device("cpu"), 1.0)
        values = response_values(value, exp, torch.device("cpu"))
        # the same rows padded by hand to the full width, run without trimming
        full_logits = policy(input_ids=exp.sequences, attention_mask=exp.attention_mask,
                             position_ids=exp.position_ids).logits[:, 2:6]
        full = torch.gather(full_logits.log_softmax(-1), 2, exp.responses.unsqueeze(-1)).squeeze(-1)
    assert logprobs.shape == values.shape == (2, 4)
    assert torch.allclose(logprobs[mask], full[mask], atol=1e-5)
    assert (logprobs[:, 2:] == 0).all() and (values[:, 2:] == 0).all()       # past the longest response: zeros


def test_phase_flops_and_matmul_params_by_hand():
    params = {"policy": 10, "reference": 10, "value": 7}
    assert phase_flops(100.0, params, ppo_epochs=2) == {"generate": 2 * 10 * 100, "score": 2 * 27 * 100,
                                                        "train": 6 * 17 * 100 * 2}
    vocab, h, layers = len(TINY_VOCAB), 64, 2
    per_layer = 4 * h * h + 3 * h * 4 * h + 2 * h               # attention, MLP (4h wide), two norms
    # the untied LM head multiplies, the input embedding is a lookup; the scalar head is h + 1
    assert matmul_params(meta_model("tiny", False)) == vocab * h + layers * per_layer + h
    assert matmul_params(meta_model("tiny", True)) == layers * per_layer + h + h + 1


def test_phase_threads_share_what_the_run_reserved_on_each_node_among_the_phase_actors():
    from rlhf.placement_rules import phase_shares, planned_threads

    def phase_threads(*args, **kwargs):        # the threads of the plan while every actor of a phase works
        return planned_threads(phase_shares(*args, **kwargs))

    # node A: 2 cores, 4 CPUs reserved by the run; node B: 16 cores, 3 reserved
    actors = [("rollout", 0, "A", 1), ("policy", 0, "A", 1), ("reference", 0, "A", 1), ("reward", 0, "A", 1),
              ("policy", 1, "B", 1), ("value", 0, "B", 2)]
    assert phase_threads(actors, {"A": 2, "B": 16}) == {
        ("rollout", 0): {"generate": 2},                  # alone on A while it generates: A's 2 cores
        ("policy", 0): {"score": 1, "train": 2},          # scores beside reference and reward; trains alone on A
        ("reference", 0): {"score": 1}, ("reward", 0): {"score": 1},
        ("policy", 1): {"score": 1, "train": 1},          # B's 3 reserved CPUs shared 1:2 with the value actor
        ("value", 0): {"score": 2, "train": 2},
    }
    # never fewer threads than an actor reserved, even on a crowded node
    assert phase_threads([("policy", 0, "A", 4), ("value", 0, "A", 4)], {"A": 2})[("policy", 0)]["train"] == 4
    # a supervised stage's one actor: its own CPU on a shared cluster, the whole node on a local cluster of its own
    solo = [("reward", 0, "A", 1)]
    assert phase_threads(solo, {"A": 2}, {"train": ("reward",)}) == {("reward", 0): {"train": 1}}
    assert phase_threads(solo, {"A": 2}, {"train": ("reward",)}, whole_nodes=True) == {("reward", 0): {"train": 2}}
    assert phase_threads(actors, {"A": 2, "B": 16}, whole_nodes=True)[("value", 0)] == {"score": 10, "train": 10}

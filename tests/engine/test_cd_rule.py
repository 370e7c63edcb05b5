"""guidance="cd": any value model steers by controlled decoding's rule π ∝ π_ref · exp(E[z]/η), checked against
the rule written out in float64 from the recorded step (sigmoid for a Bernoulli head, the histogram's mean), with
the non-candidates at the floor v_min/η; the decoding step itself runs in float32, hence the 1e-5 tolerance. A mean
head gives the same policy under both rules."""

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.generate import guided_generate
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm
from tests.engine.test_generate import PROMPTS, record_steps

ETA, TOP_K, TEMPERATURE = 0.3, 4, 0.8


def double_models(tokenizer, **head):
    ref = make_causal_lm("llama", len(tokenizer)).double()
    vm = ValueModel.from_reference(ref, 2, tokenizer, **head).double().eval()
    torch.nn.init.normal_(vm.head.weight, std=0.5)
    return ref, vm


def decode(ref, tokenizer, vm, rule: str, new: int, seed: int):
    return guided_generate(
        ref, tokenizer, PROMPTS, vm, etas=(ETA,), max_new_tokens=new, top_k=TOP_K, seed=seed, eos_token_id=[],
        guidance=rule,
    )  # fmt: skip


def cd_log_probs(step: dict, expected_reward: torch.Tensor, v_min: float) -> torch.Tensor:
    """(N, V) ln π by the CD rule, from a recorded step: candidates get E[z]/η, every other token v_min/η."""
    logits = step["ref_logits"].double() / TEMPERATURE
    offsets = torch.full_like(logits, v_min / ETA)
    offsets.scatter_(1, step["cand"].ids, expected_reward.double() / ETA)
    return torch.log_softmax(logits + offsets, dim=-1)


def expected_rewards(kind: str, head_out: torch.Tensor, v_min: float, v_max: float) -> torch.Tensor:
    """E[z] from raw head outputs, written out independently of ValueModel.expected_reward."""
    head_out = head_out.double()
    if kind == "bernoulli":
        return 1.0 / (1.0 + torch.exp(-head_out))
    atoms = torch.linspace(v_min, v_max, head_out.shape[-1], dtype=torch.float64)
    return (torch.softmax(head_out, dim=-1) * atoms).sum(-1)


@pytest.mark.parametrize("parameterization", ["v", "q"])
@pytest.mark.parametrize(("kind", "head"), [("bernoulli", {}), ("histogram", dict(n_atoms=5, v_min=-1.0, v_max=1.0))])
def test_cd_rule_on_a_distributional_head_matches_the_rule_written_out(tokenizer, parameterization, kind, head):
    ref, vm = double_models(tokenizer, kind=kind, parameterization=parameterization, **head)
    v_min, v_max = head.get("v_min", 0.0), head.get("v_max", 1.0)
    out, steps = record_steps(
        ref_model=ref, tokenizer=tokenizer, prompts=PROMPTS, value_model=vm, etas=(ETA,), max_new_tokens=5,
        top_k=TOP_K, temperature=TEMPERATURE, seed=5, eos_token_id=[], guidance="cd",
    )  # fmt: skip
    for t, step in enumerate(steps):
        logp = cd_log_probs(step, expected_rewards(kind, step["head_out"], v_min, v_max), v_min)
        drawn = out.sequences[:, t : t + 1]
        torch.testing.assert_close(out.logp_pi[:, t].double(), logp.gather(1, drawn)[:, 0], rtol=1e-5, atol=1e-5)
        assert torch.isfinite(out.logp_pi[:, t]).all()


def test_the_rules_differ_on_a_bernoulli_head(tokenizer):
    """With the same noise the two rules give other log-probs (the rule is not ignored)."""
    ref, vm = double_models(tokenizer)
    runs = {rule: decode(ref, tokenizer, vm, rule, new=3, seed=5) for rule in ("qsharp", "cd")}
    assert (runs["qsharp"].logp_pi[:, 0] - runs["cd"].logp_pi[:, 0]).abs().max() > 1e-3


def test_a_mean_head_gives_one_policy_under_both_rules(tokenizer):
    ref, vm = double_models(tokenizer, kind="mean", v_min=-1.0, v_max=1.0)
    runs = [decode(ref, tokenizer, vm, rule, new=4, seed=7) for rule in ("qsharp", "cd")]
    assert runs[0].token_lists() == runs[1].token_lists()
    torch.testing.assert_close(runs[0].logp_pi, runs[1].logp_pi, rtol=0, atol=0)


def test_an_unknown_rule_is_refused(tokenizer):
    ref, vm = double_models(tokenizer)
    with pytest.raises(UserError, match="guidance must be one of qsharp, cd"):
        guided_generate(ref, tokenizer, PROMPTS, vm, max_new_tokens=2, guidance="best")

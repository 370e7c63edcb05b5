"""The star-graph baselines' losses against independent float64 references, and their plumbing."""

import math

import mpmath
import pytest
import stargraph_policy as policy
import torch

from qsharp_ext.tasks import StarGraphTask
from qsharp_ext.tasks.stargraph import make_stargraph_reference


def dpo_reference(pc: float, pr: float, rc: float, rr: float, beta: float) -> float:
    """−log σ(β·((pc − rc) − (pr − rr))) in 50-digit arithmetic."""
    mpmath.mp.dps = 50
    margin = mpmath.mpf(beta) * ((mpmath.mpf(pc) - rc) - (mpmath.mpf(pr) - rr))
    return float(mpmath.log1p(mpmath.exp(-margin)))


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 100.0])
def test_preference_loss_matches_a_float64_reference_including_extreme_margins(rng, beta):
    n = 64
    logps = -torch.rand(4, n, generator=rng, dtype=torch.float64) * 60  # summed log-probs in [−60, 0]
    logps[:, :2] = torch.tensor([[0.0, -60.0], [-60.0, 0.0], [-30.0, -30.0], [-30.0, -30.0]], dtype=torch.float64)
    got = policy.preference_loss(*logps, beta=beta)
    want = sum(dpo_reference(*map(float, logps[:, i]), beta) for i in range(n)) / n
    assert torch.isfinite(got) and math.isclose(got.item(), want, rel_tol=1e-10)


def test_rpo_adds_the_weighted_chosen_nll(rng):
    logps = -torch.rand(4, 16, generator=rng, dtype=torch.float64) * 10
    nll = torch.rand(16, generator=rng, dtype=torch.float64)
    dpo = policy.preference_loss(*logps, beta=0.1)
    rpo = policy.preference_loss(*logps, beta=0.1, rpo_alpha=0.5, chosen_nll=nll)
    assert math.isclose((rpo - dpo).item(), 0.5 * nll.mean().item(), rel_tol=1e-12)


def test_leave_one_out_advantage(rng):
    rewards = (torch.rand(8, 4, generator=rng) > 0.5).double()
    got = policy.leave_one_out_advantage(rewards)
    for b in range(8):
        for s in range(4):
            others = [rewards[b, j].item() for j in range(4) if j != s]
            assert math.isclose(got[b, s].item(), rewards[b, s].item() - sum(others) / 3, abs_tol=1e-12)
    assert torch.equal(policy.leave_one_out_advantage(rewards[:, :1]), torch.zeros(8, 1, dtype=torch.float64))


@pytest.fixture(scope="module")
def small():
    task = StarGraphTask(degree=2, path_len=3, n_labels=12, n_pretrain=256, n_posttrain=64, n_test=32)
    return task, task.tokenizer(), make_stargraph_reference(task, n_layers=1, hidden=32)


def test_answer_logprobs_are_the_answer_tokens_log_softmax(small):
    task, tokenizer, model = small
    problems = task.eval_problems()[:3]
    answers = [policy.path_ids(tokenizer, p) for p in problems]
    answers[1] = answers[1][:2]  # rows of different lengths are right-padded
    batch = policy.encode(tokenizer, [p.prompt for p in problems], answers)
    got = policy.answer_logprobs(model, batch).sum(-1)
    for i, (p, answer) in enumerate(zip(problems, answers, strict=True)):
        prompt = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        want = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(answer))
        assert math.isclose(got[i].item(), want, rel_tol=1e-4, abs_tol=1e-4)


def test_pretraining_lowers_the_answer_loss(small):
    task, tokenizer, model = small
    records = policy.pretrain(model, tokenizer, task.pretrain_problems(), steps=40, batch_size=32, lr=3e-3)
    first, last = sum(r["loss"] for r in records[:5]) / 5, sum(r["loss"] for r in records[-5:]) / 5
    assert last < first - 0.3, (first, last)


def test_preference_pairs_reject_only_failed_samples(small):
    task, tokenizer, model = small
    problems = task.train_problems()[:16]
    pairs = policy.preference_pairs(model, tokenizer, task, problems, samples=2, seed=0)
    assert pairs, "an untrained π_ref fails on some graphs"
    for pair in pairs:
        assert pair.chosen == policy.path_ids(tokenizer, pair.problem)
        assert policy.completion_reward(tokenizer, task, pair.problem, pair.rejected) == 0.0

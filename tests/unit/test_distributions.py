"""distributions.py against independent 50-digit references, on fresh random inputs and the extremes."""

import math

import pytest
import torch

from qsharp_ext import distributions as D
from tests.conftest import ETAS, extreme_logits
from tests.unit import reference as ref


def assert_close_finite(actual: torch.Tensor, expected: list[float], rtol: float, atol: float) -> None:
    assert torch.isfinite(actual).all(), actual
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=rtol, atol=atol)


@pytest.mark.parametrize("eta", ETAS)
def test_bernoulli_log_offset_matches_reference(rng, eta):
    logits = extreme_logits(rng, 64)
    expected = [ref.bernoulli_log_offset(x, eta) for x in logits.tolist()]
    # Relative precision holds even where the offset is ~1e-24 (p tiny, η large).
    assert_close_finite(D.bernoulli_log_offset(logits, eta), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("eta", ETAS)
def test_bernoulli_log_offset_float32_stays_finite_and_close(rng, eta):
    logits = extreme_logits(rng, 64, torch.float32)
    expected = [ref.bernoulli_log_offset(x, eta) for x in logits.tolist()]
    # float32 keeps ~|ln p|·2^-23 relative precision where the offset is ≈ p·(e^{1/η} - 1) (p tiny).
    assert_close_finite(D.bernoulli_log_offset(logits, eta), expected, rtol=1e-5, atol=1e-30)


def test_bernoulli_log_offset_broadcasts_over_a_tensor_of_etas(rng):
    logits = extreme_logits(rng, 5)  # (n,)
    etas = torch.tensor(ETAS, dtype=torch.float64).unsqueeze(1)  # (4, 1)
    out = D.bernoulli_log_offset(logits, etas)  # (4, n)
    expected = [[ref.bernoulli_log_offset(x, e) for x in logits.tolist()] for e in ETAS]
    assert_close_finite(out, expected, rtol=1e-12, atol=0)


def test_infinite_eta_gives_zero_offset(rng):
    logits = extreme_logits(rng, 8)
    assert torch.equal(D.bernoulli_log_offset(logits, math.inf), torch.zeros_like(logits))


@pytest.mark.parametrize("eta", ETAS)
@pytest.mark.parametrize("n_atoms", [2, 11, 51])
def test_histogram_log_offset_matches_reference(rng, eta, n_atoms):
    logits = torch.randn(6, n_atoms, generator=rng, dtype=torch.float64) * 20
    logits[0, 0], logits[1, -1] = 50.0, -50.0  # one near-certain atom, one near-impossible
    atoms = D.make_atoms(-1.0, 2.0, n_atoms).double()
    expected = [ref.histogram_log_offset(row, atoms.tolist(), eta) for row in logits.tolist()]
    assert_close_finite(D.histogram_log_offset(logits, atoms, eta), expected, rtol=1e-12, atol=1e-12)


def test_mean_log_offset_and_soft_q_value(rng):
    mean = torch.rand(10, generator=rng, dtype=torch.float64)
    for eta in ETAS:
        torch.testing.assert_close(D.mean_log_offset(mean, eta), mean / eta)
    # Soft Q-value = η × offset lies between E[z] and max z for a Bernoulli head.
    logits = extreme_logits(rng, 32)
    for eta in ETAS:
        q = eta * D.bernoulli_log_offset(logits, eta)
        assert (q >= torch.sigmoid(logits) - 1e-12).all() and (q <= 1 + 1e-12).all()


def naive_guided_logits(ref_logits, cand_ids, offsets, floor, candidates_only):
    out = []
    for row, ids, offs in zip(ref_logits.tolist(), cand_ids.tolist(), offsets.tolist()):
        new = [-math.inf if candidates_only else x + floor for x in row]
        for i, o in zip(ids, offs):
            new[i] = row[i] + o
        out.append(new)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("candidates_only", [False, True])
def test_guided_logits_matches_naive_loop(rng, candidates_only):
    B, V, k = 5, 40, 7
    ref_logits = torch.randn(B, V, generator=rng, dtype=torch.float64) * 10
    cand_ids = torch.stack([torch.randperm(V, generator=rng)[:k] for _ in range(B)])
    offsets = torch.rand(B, k, generator=rng, dtype=torch.float64) * 5
    out = D.guided_logits(ref_logits, cand_ids, offsets, floor_log_offset=0.3, candidates_only=candidates_only)
    torch.testing.assert_close(out, naive_guided_logits(ref_logits, cand_ids, offsets, 0.3, candidates_only))


def test_guided_logits_takes_a_floor_per_row(rng):
    ref_logits = torch.randn(3, 10, generator=rng, dtype=torch.float64)
    cand_ids = torch.tensor([[0, 1], [2, 3], [4, 5]])
    floors = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    out = D.guided_logits(ref_logits, cand_ids, torch.zeros(3, 2, dtype=torch.float64), floors)
    torch.testing.assert_close(out[:, 9], ref_logits[:, 9] + floors)


@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_token_kl_matches_reference(rng, scale):
    ref_logits = torch.randn(8, 9, generator=rng, dtype=torch.float64) * scale
    guided = ref_logits + torch.randn(8, 9, generator=rng, dtype=torch.float64) * 3
    guided[0, :4] = -math.inf  # candidates only: π puts no mass there
    expected = [ref.kl(g, r) for g, r in zip(guided.tolist(), ref_logits.tolist())]
    assert_close_finite(D.token_kl(guided, ref_logits), expected, rtol=1e-9, atol=1e-12)


def test_histogram_target_splits_between_atoms_and_keeps_the_mean(rng):
    atoms = D.make_atoms(0.0, 1.0, 11).double()
    rewards = torch.cat([torch.rand(50, generator=rng, dtype=torch.float64), torch.tensor([0.0, 1.0, 0.3])])
    target = D.histogram_target(rewards, atoms)
    torch.testing.assert_close(target.sum(-1), torch.ones(len(rewards), dtype=torch.float64))
    torch.testing.assert_close((target * atoms).sum(-1), rewards)  # projection preserves E[z]
    assert ((target > 0).sum(-1) <= 2).all()  # at most two neighbouring atoms
    for r, row in zip(rewards.tolist(), target.tolist()):  # only the atoms bracketing r get mass
        nonzero = [a for a, w in zip(atoms.tolist(), row) if w > 0]
        assert all(abs(a - r) < 0.1 + 1e-12 for a in nonzero)


def test_losses_match_reference(rng):
    logits = extreme_logits(rng, 20)
    labels = torch.randint(0, 2, logits.shape, generator=rng).double()
    expected = sum(ref.bce(x, y) for x, y in zip(logits.tolist(), labels.tolist())) / len(labels)
    torch.testing.assert_close(D.bernoulli_loss(logits, labels).item(), expected, rtol=1e-12, atol=0)

    atoms = D.make_atoms(0.0, 1.0, 5).double()
    hist_logits = torch.randn(3, 5, generator=rng, dtype=torch.float64)
    rewards = torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64)
    logp = torch.log_softmax(hist_logits, -1)
    # 0 → atom 0; 0.6 sits 40/60 between atoms 0.5 and 0.75; 1 → atom 4.
    nll = -(logp[0, 0] + 0.6 * logp[1, 2] + 0.4 * logp[1, 3] + logp[2, 4]) / 3
    torch.testing.assert_close(D.histogram_loss(hist_logits, atoms, rewards), nll)

    mean = torch.rand(7, generator=rng, dtype=torch.float64)
    target = torch.rand(7, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(D.mean_loss(mean, target), ((mean - target) ** 2).mean())


@pytest.mark.parametrize(
    "call",
    [
        lambda: D.bernoulli_loss(torch.zeros(2), torch.tensor([0.0, 1.5])),
        lambda: D.histogram_loss(torch.zeros(2, 3), torch.linspace(0, 1, 3), torch.tensor([-0.1, 0.5])),
        lambda: D.mean_loss(torch.zeros(2), torch.tensor([0.0, math.nan])),
    ],
)
def test_rewards_outside_the_support_are_a_clear_error(call):
    with pytest.raises(ValueError, match="outside the value head's support"):
        call()

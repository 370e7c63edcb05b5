"""Properties of the log-offsets and KL that hold for every input (hypothesis)."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qsharp_ext import distributions as D

logit = st.floats(-50, 50)
eta = st.floats(0.01, 100)
settings.register_profile("qsharp", deadline=None, max_examples=150)
settings.load_profile("qsharp")


def t(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


@given(logit, logit, eta)
def test_bernoulli_offset_is_monotone_in_p(a, b, e):
    lo, hi = sorted((a, b))
    assert D.bernoulli_log_offset(t(lo), e) <= D.bernoulli_log_offset(t(hi), e)


@given(logit, eta, eta)
def test_bernoulli_offset_is_monotone_in_inverse_eta(x, e1, e2):
    small, large = sorted((e1, e2))
    assert D.bernoulli_log_offset(t(x), large) <= D.bernoulli_log_offset(t(x), small)


@given(st.lists(st.floats(-20, 20), min_size=2, max_size=12), eta, eta)
def test_histogram_offset_is_monotone_in_inverse_eta_for_nonnegative_atoms(logits, e1, e2):
    small, large = sorted((e1, e2))
    x = torch.tensor(logits, dtype=torch.float64)
    atoms = D.make_atoms(0.0, 1.0, len(logits)).double()
    assert D.histogram_log_offset(x, atoms, large) <= D.histogram_log_offset(x, atoms, small) + 1e-12


@given(st.floats(-15, 15))
def test_large_eta_gives_the_mean(x):
    """η·offset → E[z] as η → ∞ (error ≈ Var[z]/(2η))."""
    e = 1e6
    assert abs(e * D.bernoulli_log_offset(t(x), e).item() - torch.sigmoid(t(x)).item()) < 1e-6


@given(st.lists(st.floats(-10, 10), min_size=2, max_size=12))
def test_large_eta_gives_the_histogram_mean(logits):
    e = 1e6
    x = torch.tensor(logits, dtype=torch.float64)
    atoms = D.make_atoms(-1.0, 3.0, len(logits)).double()
    mean = (torch.softmax(x, -1) * atoms).sum()
    assert abs(e * D.histogram_log_offset(x, atoms, e) - mean) < 1e-5


@given(st.floats(-20, 20))
def test_small_eta_gives_the_best_reward_with_nonzero_probability(x):
    """η·offset → max{z : P(z) > 0} as η → 0: here 1, since p = sigmoid(x) > 0 (gap ≈ η·|ln p|)."""
    e = 1e-4
    q = e * D.bernoulli_log_offset(t(x), e).item()
    assert abs(q - 1.0) <= e * (abs(x) + 1)
    assert D.bernoulli_log_offset(t(-math.inf), e).item() == 0.0  # p = 0: only reward 0 is possible


@given(st.lists(st.floats(-10, 10), min_size=3, max_size=12), st.integers(1, 2))
def test_small_eta_histogram_ignores_atoms_with_zero_mass(logits, n_impossible):
    e = 1e-4
    x = torch.tensor(logits, dtype=torch.float64)
    x[-n_impossible:] = -math.inf  # the top atoms cannot happen
    atoms = D.make_atoms(0.0, 1.0, len(logits)).double()
    best = atoms[-n_impossible - 1].item()
    assert abs(e * D.histogram_log_offset(x, atoms, e).item() - best) <= e * 30


@given(st.integers(0, 2**31 - 1), st.integers(2, 30), eta)
def test_kl_is_nonnegative_and_zero_for_equal_offsets(seed, vocab, e):
    g = torch.Generator().manual_seed(seed)
    ref_logits = torch.randn(4, vocab, generator=g, dtype=torch.float64) * 10
    k = max(1, vocab // 3)
    cand_ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(4)])
    offsets = D.bernoulli_log_offset(torch.randn(4, k, generator=g, dtype=torch.float64) * 10, e)
    assert (D.token_kl(D.guided_logits(ref_logits, cand_ids, offsets), ref_logits) >= 0).all()
    same = torch.full((4, k), 0.7, dtype=torch.float64)
    kl = D.token_kl(D.guided_logits(ref_logits, cand_ids, same, floor_log_offset=0.7), ref_logits)
    assert (kl.abs() < 1e-12).all()

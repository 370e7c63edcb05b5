"""Reward distributions Z(prefix) and what Q♯ needs from them: log-offsets, guided logits, exact KL, losses.

Q♯ steers a frozen reference policy with the distribution Z of the final reward that π_ref reaches from
a prefix:

    π(y | prefix) ∝ π_ref(y | prefix) · E_{z ~ Z(prefix + y)}[exp(z / η)].

The log of that expectation is the *log-offset* added to π_ref's logit of y. The soft Q-value of the
KL-regularized problem is η × log-offset: Q*(x, y≤h) = η · ln E[exp(z / η)] (Zhou et al., 2025, eq. 3),
so `eta * bernoulli_log_offset(logit, eta)` is a soft Q-value in reward units.

Three heads are supported:
- Bernoulli (binary reward, one logit, p = sigmoid(logit)): ln(1 - p + p·e^{1/η}).
- Histogram (rewards on n atoms spanning [v_min, v_max]): logsumexp(log_pmf + atoms / η).
- Mean (the controlled-decoding baseline, which regresses E[z]): E[z] / η.

Everything here is plain torch, batched over leading dimensions, and is the reference that every
compiled kernel is tested against. It knows nothing about models, caches or sampling. η > 0 is taken as
given (η = ∞ gives offsets of 0: the unguided policy); it is checked where a user gives it
(`qsharp_ext.eta`), never here, so that a decoding step does not stop to look at it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Eta = float | torch.Tensor


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """ln(1 + e^x) without a cut-off threshold, accurate in both tails."""
    return torch.logaddexp(x, torch.zeros_like(x))


def log_expm1(x: torch.Tensor) -> torch.Tensor:
    """ln(e^x - 1) for x > 0, without overflow for large x nor cancellation for small x."""
    large = x > math.log(2.0)
    x_small = torch.where(large, torch.ones_like(x), x)  # keep both branches finite
    x_large = torch.where(large, x, torch.ones_like(x))
    return torch.where(large, x_large + torch.log1p(-torch.exp(-x_large)), torch.log(torch.expm1(x_small)))


def bernoulli_log_offset(logit: torch.Tensor, eta: Eta) -> torch.Tensor:
    """ln E[exp(z/η)] for z ~ Bernoulli(sigmoid(logit)) = ln(1 - p + p·e^{1/η}).

    Computed as softplus(ln(e^{1/η} - 1) + ln p): e^{1/η} is never formed, so η = 0.01 and logits ±50 stay
    finite and keep their relative precision. Shapes: `logit` (...), `eta` a float or broadcastable tensor.
    """
    inv_eta = torch.as_tensor(1.0 / eta if not torch.is_tensor(eta) else eta.reciprocal(), dtype=logit.dtype)
    log_p = -_softplus(-logit)  # ln sigmoid(logit)
    return _softplus(log_expm1(inv_eta.to(logit.device)) + log_p)


def histogram_log_offset(logits: torch.Tensor, atoms: torch.Tensor, eta: Eta) -> torch.Tensor:
    """ln E[exp(z/η)] for z on `atoms` with pmf softmax(logits): logsumexp(log_softmax(logits) + atoms/η).

    Shapes: `logits` (..., n), `atoms` (n,), `eta` a float or a tensor broadcastable to (...) → result (...).
    """
    if torch.is_tensor(eta):
        eta = eta.to(logits.device, logits.dtype).unsqueeze(-1)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + atoms.to(logits.dtype) / eta, dim=-1)


def mean_log_offset(mean: torch.Tensor, eta: Eta) -> torch.Tensor:
    """The controlled-decoding (CD) baseline's offset: E[z]/η, i.e. π ∝ π_ref·exp(E[z]/η)."""
    return mean / eta


def floor_log_offset(v_min: float, eta: Eta) -> Eta:
    """Offset given to tokens that are not candidates: that of the lowest reward, v_min/η (0 for rewards in
    {0, 1}, and 0 at η = ∞)."""
    return v_min / eta


def guided_logits(
    ref_logits: torch.Tensor,
    cand_ids: torch.Tensor,
    cand_log_offsets: torch.Tensor,
    floor_log_offset: Eta = 0.0,
    candidates_only: bool = False,
) -> torch.Tensor:
    """π's unnormalized logits: π_ref's logits plus each candidate's log-offset.

    Shapes: `ref_logits` (B, V), `cand_ids` (B, k) distinct per row, `cand_log_offsets` (B, k), and
    `floor_log_offset` a float or (B,) tensor, added to every token that is not a candidate (the paper
    gives them the lowest reward's offset). With `candidates_only=True` non-candidates get -inf instead,
    so that sampling is restricted to the k candidates.
    """
    if torch.is_tensor(floor_log_offset) and floor_log_offset.dim() > 0:
        floor_log_offset = floor_log_offset.to(ref_logits.dtype).unsqueeze(-1)  # (B, 1)
    out = torch.full_like(ref_logits, -math.inf) if candidates_only else ref_logits + floor_log_offset  # (B, V)
    cand_ref = ref_logits.gather(-1, cand_ids)  # (B, k)
    return out.scatter(-1, cand_ids, cand_ref + cand_log_offsets.to(ref_logits.dtype))


def token_kl(guided_logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(π ‖ π_ref) per row over the whole vocabulary: Σ_y π(y) (ln π(y) - ln π_ref(y)).

    Tokens with π(y) = 0 contribute nothing. The sum is clamped at 0, which only removes rounding:
    the true KL is never negative. Shapes: (..., V) → (...).
    """
    log_pi = F.log_softmax(guided_logits, dim=-1)
    log_ref = F.log_softmax(ref_logits, dim=-1)
    pi = log_pi.exp()
    terms = torch.where(pi > 0, pi * (log_pi - log_ref), torch.zeros_like(pi))
    return terms.sum(-1).clamp_min(0.0)


# ----------------------------------------------------------------------------------------------- losses


def check_rewards(reward: torch.Tensor, v_min: float, v_max: float) -> None:
    """Raise a clear error if any reward is NaN or lies outside the head's support [v_min, v_max]."""
    bad = reward.isnan() | (reward < v_min) | (reward > v_max)
    if bad.any():
        value = reward[bad].flatten()[0].item()
        raise ValueError(f"reward {value} is outside the value head's support [{v_min}, {v_max}]")


def make_atoms(v_min: float, v_max: float, n_atoms: int) -> torch.Tensor:
    """n evenly spaced atoms on [v_min, v_max] (float32), as a histogram head registers them."""
    if n_atoms < 2 or not v_max > v_min:
        raise ValueError(f"a histogram needs n_atoms >= 2 and v_max > v_min (got {n_atoms}, [{v_min}, {v_max}])")
    return torch.linspace(v_min, v_max, n_atoms)


def histogram_target(reward: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """Two-hot target (C51 projection): a reward between two atoms is split between them linearly.

    Shapes: `reward` (...), `atoms` (n,) evenly spaced → (..., n); each row sums to 1 and its mean is
    the reward exactly.
    """
    v_min, v_max, n = atoms[0].item(), atoms[-1].item(), atoms.numel()
    check_rewards(reward, v_min, v_max)
    pos = (reward.to(atoms.dtype) - v_min) / (v_max - v_min) * (n - 1)  # (...) in [0, n-1]
    lower = pos.floor().clamp(0, n - 2)
    upper_weight = pos - lower  # in [0, 1]
    target = torch.zeros(*reward.shape, n, dtype=atoms.dtype, device=atoms.device)
    target.scatter_(-1, lower.long().unsqueeze(-1), (1 - upper_weight).unsqueeze(-1))
    target.scatter_add_(-1, lower.long().unsqueeze(-1) + 1, upper_weight.unsqueeze(-1))
    return target


def bernoulli_loss(logit: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the Bernoulli head against rewards in [0, 1]."""
    check_rewards(reward, 0.0, 1.0)
    return F.binary_cross_entropy_with_logits(logit, reward.to(logit.dtype))


def histogram_loss(logits: torch.Tensor, atoms: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the projected (two-hot) reward under the histogram head."""
    target = histogram_target(reward, atoms.to(logits.dtype))
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def mean_loss(mean: torch.Tensor, reward: torch.Tensor, v_min: float = 0.0, v_max: float = 1.0) -> torch.Tensor:
    """Mean squared error of the mean head (controlled decoding regresses E[z] of π_ref)."""
    check_rewards(reward, v_min, v_max)
    return F.mse_loss(mean, reward.to(mean.dtype))

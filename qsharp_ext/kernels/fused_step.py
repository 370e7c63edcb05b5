"""The fused guided decoding step: candidate expansion and the guided draw, in one call each.

`expand_candidates` takes π_ref's raw logits (B, V) and returns its top-k tokens at temperature T with their
log-probabilities and the row's log-normalizer. `guided_sample` adds each candidate's log-offset (Bernoulli,
histogram or mean head; one η per row, ∞ for an unguided row), gives non-candidates the caller's floor offset
(or excludes them), and draws one token per row from

    π(y) ∝ π_ref(y) · exp(offset(y)),

returning its log-probabilities under π and π_ref and the exact KL(π ‖ π_ref) over the whole vocabulary.
The compiled backends get the KL in O(k) from the candidates alone: with S_c = Σ_c π_ref(c),
ln Zg = logaddexp(floor + ln(1 - S_c), logsumexp_c(ln π_ref(c) + offset(c))) and
KL = Σ_c π(c) (offset(c) - ln Zg) + π(rest) (floor - ln Zg). 1 - S_c loses its digits when the candidates
hold nearly all of π_ref's mass; only if the floor then also outweighs the candidates' offsets (a mean head
with E[z] below its v_min) do those digits matter, and the kernels sum the non-candidate mass exactly (one O(V) pass).

The draw is a deterministic function of `noise` (B,) uniform in [0, 1), so that every backend draws the same
token: the order is the candidates by descending guided logit (ties: lower candidate index), then the
non-candidates by ascending id; the token is the first whose cumulative mass exceeds u · (kept mass).
Top-p keeps the smallest prefix of the ordered candidates whose guided mass reaches top_p, but only when the
candidates hold at least top_p of the guided mass (the usual case): otherwise nothing is truncated, so the
nucleus is exact whenever it lies among the k candidates and is a superset of it otherwise. The
non-candidates are walked (O(V)) only when u falls past the candidates.

What it does not know: models, caches, how the head outputs were produced, or which floor a head's support
calls for (`qsharp_ext.guided_policy` decides). Logits must be finite or -inf (NaN is not supported); the
compiled backends read and write float32. Every backend checks shapes only: η, the temperature and top_p are
checked where a user gives them, so that a decoding step never waits for the device to report on them.

This module holds the pure-torch reference (`reference_expand_candidates`, `reference_guided_logits`,
`reference_guided_sample`: the unfused composition of `qsharp_ext.distributions` over the full (B, V)), which
every backend is tested against, and the dispatch to the C++, CUDA and Triton kernels
(`qsharp_ext.kernels.dispatch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from qsharp_ext import distributions as D
from qsharp_ext.kernels.dispatch import compiled_ops, resolve_backend

HEADS = ("bernoulli", "histogram", "mean")


@dataclass
class Candidates:
    """π_ref's top-k tokens at temperature T."""

    ids: Tensor  # (B, k) int64, by descending logit (ties: lower id first)
    ref_logp: Tensor  # (B, k) float32: ln π_ref(id) = logits[id]/T - lse
    lse: Tensor  # (B,) float32: logsumexp of logits/T over the whole vocabulary


@dataclass
class StepResult:
    """One guided draw per row."""

    token: Tensor  # (B,) int64
    cand_index: Tensor  # (B,) int64: the token's position among the candidates, -1 for a non-candidate
    logp_pi: Tensor  # (B,) float32: ln π(token) under the guided distribution (before top-p)
    logp_ref: Tensor  # (B,) float32: ln π_ref(token) at temperature T
    kl: Tensor  # (B,) float32: exact KL(π ‖ π_ref) over the whole vocabulary (before top-p)


# ------------------------------------------------------------------------------------------------ checks


def check_expand_args(ref_logits: Tensor, k: int) -> None:
    """Raise a clear ValueError for shapes that no backend accepts."""
    if ref_logits.dim() != 2 or ref_logits.shape[1] < 1:
        raise ValueError(f"ref_logits must be (B, V) with V >= 1, got shape {tuple(ref_logits.shape)}")
    if not ref_logits.is_floating_point():
        raise ValueError(f"ref_logits must be floating point, got {ref_logits.dtype}")
    vocab = ref_logits.shape[1]
    if not 1 <= k <= vocab:
        raise ValueError(f"k must be in [1, V] = [1, {vocab}], got {k}")


def _check_shape(t: Tensor | None, name: str, shape: tuple[int, ...]) -> None:
    if t is None or tuple(t.shape) != shape:
        got = None if t is None else tuple(t.shape)
        raise ValueError(f"{name} must have shape {shape}, got {got}")


def check_sample_args(
    ref_logits: Tensor,
    cand: Candidates,
    head_out: Tensor,
    head: str,
    eta: Tensor,
    noise: Tensor,
    floor: Tensor,
    atoms: Tensor | None,
) -> None:
    """Raise a clear ValueError for shapes and head kinds that no backend accepts (never for values: no sync)."""
    if ref_logits.dim() != 2:
        raise ValueError(f"ref_logits must be (B, V), got shape {tuple(ref_logits.shape)}")
    batch, vocab = ref_logits.shape
    if cand.ids.dim() != 2 or cand.ids.shape[0] != batch or not 1 <= cand.ids.shape[1] <= vocab:
        raise ValueError(f"cand.ids must be (B, k) with 1 <= k <= V = {vocab}, got {tuple(cand.ids.shape)}")
    k = cand.ids.shape[1]
    _check_shape(cand.ref_logp, "cand.ref_logp", (batch, k))
    _check_shape(cand.lse, "cand.lse", (batch,))
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if head == "histogram":
        if atoms is None or atoms.dim() != 1 or atoms.numel() < 1:
            raise ValueError("a histogram head needs atoms, a non-empty 1-D tensor")
        _check_shape(head_out, "head_out", (batch, k, atoms.numel()))
    else:
        _check_shape(head_out, "head_out", (batch, k))
    _check_shape(eta, "eta", (batch,))
    _check_shape(noise, "noise", (batch,))
    _check_shape(floor, "floor", (batch,))


# --------------------------------------------------------------------------------------- torch reference


def reference_topk(ref_logits: Tensor, k: int) -> Tensor:
    """(B, k) ids of the k largest logits, by descending logit with ties broken by lower id.

    torch.topk does not specify its tie order, so the boundary value's ties are resolved by id and the
    selection re-sorted stably.
    """
    kth = ref_logits.topk(k, dim=-1).values[:, -1:]  # (B, 1)
    above = ref_logits > kth  # (B, V)
    at_kth = ref_logits == kth
    room = k - above.sum(-1, keepdim=True)  # (B, 1) ties admitted, lowest ids first
    chosen = above | (at_kth & (at_kth.cumsum(-1) <= room))
    ids = chosen.nonzero()[:, 1].view(ref_logits.shape[0], k)  # (B, k), ascending ids
    order = ref_logits.gather(-1, ids).sort(dim=-1, descending=True, stable=True).indices
    return ids.gather(-1, order)


def reference_expand_candidates(ref_logits: Tensor, temperature: float, k: int) -> Candidates:
    """The unfused composition: log_softmax and top-k over the full (B, V), in the logits' dtype."""
    check_expand_args(ref_logits, k)
    z = ref_logits / temperature  # (B, V)
    ids = reference_topk(ref_logits, k)
    return Candidates(ids=ids, ref_logp=F.log_softmax(z, dim=-1).gather(-1, ids), lse=torch.logsumexp(z, dim=-1))


def reference_log_offsets(head_out: Tensor, head: str, eta: Tensor, atoms: Tensor | None) -> Tensor:
    """(B, k) candidate log-offsets from `qsharp_ext.distributions`, one η per row."""
    eta_col = eta.to(head_out.dtype).unsqueeze(-1)  # (B, 1)
    if head == "bernoulli":
        return D.bernoulli_log_offset(head_out, eta_col)
    if head == "histogram":
        return D.histogram_log_offset(head_out, atoms.to(head_out), eta_col)
    return D.mean_log_offset(head_out, eta_col)


def sampling_probs(guided: Tensor, cand_ids: Tensor, top_p: float, candidates_only: bool) -> tuple[Tensor, Tensor]:
    """The sampling order (B, V) of token ids and π in that order (B, V), zero where top-p truncates.

    Order: candidates by descending guided logit (stable: ties by lower candidate index), then the
    non-candidates by ascending id.
    """
    batch, vocab = guided.shape
    k = cand_ids.shape[1]
    probs = F.log_softmax(guided, dim=-1).exp()  # (B, V)
    rank = guided.gather(-1, cand_ids).sort(dim=-1, descending=True, stable=True).indices  # (B, k)
    is_cand = torch.zeros_like(guided, dtype=torch.bool).scatter(-1, cand_ids, True)
    rest = torch.arange(vocab, device=guided.device).expand(batch, vocab)[~is_cand].view(batch, vocab - k)
    order = torch.cat([cand_ids.gather(-1, rank), rest], dim=-1)  # (B, V)
    p = probs.gather(-1, order)  # (B, V)
    if candidates_only:
        p[:, k:] = 0.0
    cand_cum = p[:, :k].cumsum(-1)  # (B, k)
    truncate = (top_p < 1.0) & (cand_cum[:, -1] >= top_p)  # (B,)
    n_keep = (cand_cum < top_p).sum(-1) + 1  # smallest prefix reaching top_p
    keep = torch.arange(vocab, device=guided.device) < torch.where(truncate, n_keep, vocab).unsqueeze(-1)
    return order, torch.where(keep, p, torch.zeros_like(p))


def inverse_cdf(order: Tensor, p: Tensor, noise: Tensor) -> Tensor:
    """(B,) the first token in `order` whose cumulative mass exceeds u · (total kept mass).

    When rounding leaves u past the end, the last token with positive mass is drawn.
    """
    cdf = p.cumsum(-1)  # (B, V)
    target = noise.to(cdf.dtype) * cdf[:, -1]  # (B,)
    pos = torch.searchsorted(cdf, target.unsqueeze(-1), right=True).squeeze(-1)  # (B,)
    positions = torch.arange(p.shape[1], device=p.device)
    last_positive = torch.where(p > 0, positions, -1).amax(-1)
    return order.gather(-1, torch.where(pos >= p.shape[1], last_positive, pos).unsqueeze(-1)).squeeze(-1)


def candidate_kl(ref_logp: Tensor, offsets: Tensor, floor: Tensor, rest_log_mass: Tensor) -> Tensor:
    """KL(π ‖ π_ref) in O(k) from the candidates: (B, k) ln π_ref, (B, k) offsets, (B,) floor and (B,) ln of
    π_ref's non-candidate mass (-inf when there is none). The compiled kernels use this formula."""
    a = ref_logp + offsets  # (B, k)
    rest = floor + rest_log_mass  # (B,)
    log_z = torch.logaddexp(rest, torch.logsumexp(a, dim=-1))  # (B,)
    pi_c = (a - log_z.unsqueeze(-1)).exp()
    pi_rest = (rest - log_z).exp()
    kl = (pi_c * (offsets - log_z.unsqueeze(-1))).sum(-1)
    return (kl + torch.where(pi_rest > 0, pi_rest * (floor - log_z), torch.zeros_like(kl))).clamp_min(0.0)


def reference_guided_logits(
    ref_logits: Tensor,
    cand_ids: Tensor,
    head_out: Tensor,
    head: str,
    eta: Tensor,
    temperature: float,
    *,
    floor: Tensor,
    atoms: Tensor | None = None,
    candidates_only: bool = False,
) -> Tensor:
    """(B, V) π's unnormalized logits at temperature T, in the logits' dtype: each candidate's
    ln π_ref + log-offset, every other token ln π_ref + floor (or -inf with `candidates_only`)."""
    z = ref_logits / temperature  # (B, V)
    offsets = reference_log_offsets(head_out.to(z.dtype), head, eta.to(z.dtype), atoms)  # (B, k)
    return D.guided_logits(z, cand_ids, offsets, floor.to(z.dtype), candidates_only)


def reference_guided_sample(
    ref_logits: Tensor,
    cand: Candidates,
    head_out: Tensor,
    head: str,
    eta: Tensor,
    temperature: float,
    noise: Tensor,
    *,
    floor: Tensor,
    atoms: Tensor | None = None,
    top_p: float = 1.0,
    candidates_only: bool = False,
) -> StepResult:
    """The unfused composition over the full (B, V): guided_logits, log_softmax, token_kl, sort, inverse CDF."""
    check_sample_args(ref_logits, cand, head_out, head, eta, noise, floor, atoms)
    z = ref_logits / temperature  # (B, V)
    guided = reference_guided_logits(
        ref_logits, cand.ids, head_out, head, eta, temperature, floor=floor, atoms=atoms,
        candidates_only=candidates_only,
    )  # fmt: skip
    order, p = sampling_probs(guided, cand.ids, top_p, candidates_only)
    token = inverse_cdf(order, p, noise)  # (B,)
    match = cand.ids == token.unsqueeze(-1)  # (B, k)
    cand_index = torch.where(match.any(-1), match.int().argmax(-1), -1)
    tok = token.unsqueeze(-1)
    return StepResult(
        token=token,
        cand_index=cand_index,
        logp_pi=F.log_softmax(guided, dim=-1).gather(-1, tok).squeeze(-1),
        logp_ref=F.log_softmax(z, dim=-1).gather(-1, tok).squeeze(-1),
        kl=D.token_kl(guided, z),
    )


# -------------------------------------------------------------------------------------------- dispatch


def _triton(device: torch.device) -> ModuleType:
    """The Triton kernels module (imported on first use: triton is heavy and optional)."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise RuntimeError("the triton backend needs CUDA tensors, or TRITON_INTERPRET=1 to run on the CPU")
    from qsharp_ext.kernels import triton_step

    return triton_step


def expand_candidates(ref_logits: Tensor, temperature: float, k: int, backend: str | None = None) -> Candidates:
    """π_ref's top-k candidates at temperature T (ties: lower id first), ln π_ref of each and the row's lse.

    Shapes: `ref_logits` (B, V) raw logits, 1 <= k <= V. The compiled backends read float32.
    """
    chosen = resolve_backend(ref_logits.device, backend)
    if chosen == "torch":
        return reference_expand_candidates(ref_logits, temperature, k)  # checks its own arguments
    check_expand_args(ref_logits, k)
    if chosen == "triton":
        return _triton(ref_logits.device).expand_candidates(ref_logits.float(), temperature, k)
    ids, ref_logp, lse = compiled_ops().expand_candidates(ref_logits.float(), float(temperature), k)
    return Candidates(ids=ids, ref_logp=ref_logp, lse=lse)


def guided_sample(
    ref_logits: Tensor,
    cand: Candidates,
    head_out: Tensor,
    head: str,
    eta: Tensor,
    temperature: float,
    noise: Tensor,
    *,
    floor: Tensor,
    atoms: Tensor | None = None,
    top_p: float = 1.0,
    candidates_only: bool = False,
    backend: str | None = None,
) -> StepResult:
    """Draw one token per row from π ∝ π_ref · exp(offset); see the module docstring for the exact rule.

    Shapes: `ref_logits` (B, V); `head_out` (B, k) for bernoulli/mean heads, (B, k, n) for histogram heads with
    `atoms` (n,); `eta`, `noise` and `floor` (B,). η = ∞ is an unguided row (give it floor 0); η must be
    positive, T positive and top_p in (0, 1]: unchecked here (the callers' entry points check them).
    """
    chosen = resolve_backend(ref_logits.device, backend)
    if chosen == "torch":  # the reference checks its own arguments
        return reference_guided_sample(
            ref_logits, cand, head_out, head, eta, temperature, noise,
            floor=floor, atoms=atoms, top_p=top_p, candidates_only=candidates_only,
        )  # fmt: skip
    check_sample_args(ref_logits, cand, head_out, head, eta, noise, floor, atoms)
    f32 = torch.float32
    atoms = torch.zeros(1, device=ref_logits.device) if atoms is None else atoms
    args = (
        ref_logits.to(f32), cand.ids, cand.ref_logp.to(f32), cand.lse.to(f32), head_out.to(f32), head,
        atoms.to(ref_logits.device, f32), eta.to(f32), floor.to(f32), noise.to(torch.float64),
        float(temperature), float(top_p), bool(candidates_only),
    )  # fmt: skip
    if chosen == "triton":
        return StepResult(*_triton(ref_logits.device).guided_sample(*args))
    return StepResult(*compiled_ops().guided_sample(*args))


__all__ = [
    "HEADS",
    "Candidates",
    "StepResult",
    "candidate_kl",
    "expand_candidates",
    "guided_sample",
    "reference_expand_candidates",
    "reference_guided_logits",
    "reference_guided_sample",
]

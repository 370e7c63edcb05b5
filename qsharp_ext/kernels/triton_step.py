"""Triton kernels of the fused guided decoding step (see `qsharp_ext.kernels.fused_step` for the rule).

The top-k expansion reads each row once, in parallel chunks:
- `_chunk_topk_kernel`, one program per (row, chunk of `_CHUNK` logits): the chunk's max and Σ exp (for the
  row's logsumexp), then its own top k by k rounds of an argmax over the chunk held in registers (ties: lower
  id first);
- `_merge_topk_kernel`, one program per row: the row's logsumexp from the chunks' (max, Σ exp), and the top k of
  the chunks' k·C finalists, in (logit desc, id asc) order.
A large k (k·C finalists past `_MAX_MERGE`) takes `_expand_kernel` instead, one program per row: an online
logsumexp over row tiles, then k rounds of a masked argmax, each over the whole row.
Then one kernel, one program per row:
- `_guided_kernel`: the candidates' log-offsets (Bernoulli, histogram or mean head), the O(k) guided
  statistics (ln Zg, the candidates' and the rest's mass, exact KL), the sampling order as ranks from a
  (k, k) comparison, top-p and the inverse-CDF draw; the non-candidates are walked tile by tile only when u
  falls past the candidates (or, for a large floor and almost no non-candidate mass, summed exactly).

Runs on GPUs, and on the CPU under TRITON_INTERPRET=1 (slowly: tests keep sizes small). Float32 I/O with
float64 sums; the guided kernel takes k <= MAX_K (1024) candidates. The per-row η constants (1/η and
ln(e^{1/η} - 1)) are computed in torch before the launch. Tested here only under the interpreter: the
compiled GPU path has not been run on a GPU yet.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qsharp_ext import distributions as D
from qsharp_ext.kernels.fused_step import Candidates

_HEAD_IDS = {"bernoulli": 0, "histogram": 1, "mean": 2}
_BLOCK_V = 1024
_CHUNK = 4096  # logits per program of the chunked top-k: a 128k vocabulary is 32 programs per row
_MAX_MERGE = 8192  # finalists (chunks × k) one merge program holds
_MAX_TILE = 1 << 13  # elements of one (vocab tile, k) membership test
MAX_K = 1024  # the sampling order is a (k, k) comparison held by one program


@triton.jit
def _expand_kernel(x_ptr, ids_ptr, logp_ptr, lse_ptr, V, k, temperature, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * V
    neg_inf = float("-inf")
    m = tl.full((), neg_inf, tl.float32)
    s = tl.full((), 0.0, tl.float64)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = tl.load(base + offs, mask=offs < V, other=neg_inf) / temperature
        new_m = tl.maximum(m, tl.max(z, 0))
        safe_m = tl.where(new_m == neg_inf, 0.0, new_m)
        tile = tl.sum(tl.exp(z - safe_m).to(tl.float64), 0)
        s = s * tl.exp((m - safe_m).to(tl.float64)) + tile
        m = new_m
    lse = (m.to(tl.float64) + tl.log(s)).to(tl.float32)
    tl.store(lse_ptr + row, lse)
    prev_x = tl.full((), float("inf"), tl.float32)
    prev_id = tl.full((), -1, tl.int64)
    for r in range(0, k):
        best_x = tl.full((), neg_inf, tl.float32)
        best_id = tl.zeros((), tl.int64) + V
        for start in range(0, V, BLOCK):
            offs = (start + tl.arange(0, BLOCK)).to(tl.int64)
            x = tl.load(base + offs, mask=offs < V, other=neg_inf)
            after = (x < prev_x) | ((x == prev_x) & (offs > prev_id))
            eligible = (offs < V) & after
            xv = tl.where(eligible, x, neg_inf)
            bx = tl.max(xv, 0)
            bid = tl.min(tl.where(eligible & (xv == bx), offs, V), 0)
            take = (bx > best_x) | ((bx == best_x) & (bid < best_id))
            best_x = tl.where(take, bx, best_x)
            best_id = tl.where(take, bid, best_id)
        tl.store(ids_ptr + row * k + r, best_id)
        tl.store(logp_ptr + row * k + r, best_x / temperature - lse)
        prev_x = best_x
        prev_id = best_id


@triton.jit
def _log1p(y):
    """ln(1 + y) without losing small y."""
    u = 1.0 + y
    return tl.where(u == 1.0, y, tl.log(u) * y / (u - 1.0))


@triton.jit
def _softplus(x):
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _log_offsets(head_ptr, atoms_ptr, row, k_offs, k_mask, k, n_atoms, inv_eta, c_bern, eta,
                 HEAD: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """(BLOCK_K,) candidate log-offsets of one row (see qsharp_ext.distributions)."""
    if HEAD == 1:
        n_offs = tl.arange(0, BLOCK_N)
        n_mask = n_offs < n_atoms
        mask2 = k_mask[:, None] & n_mask[None, :]
        ptrs = head_ptr + (row * k + k_offs)[:, None] * n_atoms + n_offs[None, :]
        logits = tl.load(ptrs, mask=mask2, other=float("-inf"))  # (BLOCK_K, BLOCK_N)
        atoms = tl.load(atoms_ptr + n_offs, mask=n_mask, other=0.0)
        mx = tl.max(logits, 1)
        mx = tl.where(k_mask, mx, 0.0)
        log_norm = mx + tl.log(tl.sum(tl.exp(logits - mx[:, None]), 1))
        tilted = logits + atoms[None, :] * inv_eta
        mt = tl.where(k_mask, tl.max(tilted, 1), 0.0)
        off = mt + tl.log(tl.sum(tl.exp(tilted - mt[:, None]), 1)) - log_norm
    else:
        out = tl.load(head_ptr + row * k + k_offs, mask=k_mask, other=0.0)
        off = _softplus(c_bern - _softplus(-out)) if HEAD == 0 else out / eta
    return tl.where(k_mask, off, 0.0)


@triton.jit
def _is_candidate(offs, ids, k_mask):
    """(BLOCK_V,) whether each id in `offs` is one of the row's candidates."""
    return tl.sum(((offs[:, None] == ids[None, :]) & k_mask[None, :]).to(tl.int32), 1) > 0


@triton.jit
def _guided_kernel(x_ptr, ids_ptr, ref_logp_ptr, lse_ptr, head_ptr, atoms_ptr, eta_ptr, inv_eta_ptr, c_bern_ptr,
                   floor_ptr, noise_ptr, token_ptr, cand_ptr, logp_pi_ptr, logp_ref_ptr, kl_ptr,
                   V, k, n_atoms, temperature, top_p, CANDIDATES_ONLY: tl.constexpr, HEAD: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    neg_inf = float("-inf")
    k_offs = tl.arange(0, BLOCK_K)
    k_mask = k_offs < k
    ids = tl.load(ids_ptr + row * k + k_offs, mask=k_mask, other=-1)
    ref_logp = tl.load(ref_logp_ptr + row * k + k_offs, mask=k_mask, other=neg_inf)
    lse = tl.load(lse_ptr + row)
    floor = tl.load(floor_ptr + row)
    eta = tl.load(eta_ptr + row)
    off = _log_offsets(head_ptr, atoms_ptr, row, k_offs, k_mask, k, n_atoms, tl.load(inv_eta_ptr + row),
                       tl.load(c_bern_ptr + row), eta, HEAD, BLOCK_N)  # fmt: skip
    z_c = tl.load(x_ptr + row * V + ids, mask=k_mask, other=0.0) / temperature
    key = tl.where(k_mask, z_c + off, neg_inf)  # guided logits
    a = tl.where(k_mask, ref_logp.to(tl.float64) + off.to(tl.float64), neg_inf)  # (BLOCK_K,)
    floor64 = floor.to(tl.float64)

    # non-candidate mass of π_ref: 1 - Σ_c π_ref(c), summed exactly when it has lost its digits and matters
    has_rest = k < 0 if CANDIDATES_ONLY else k < V
    s_ref = tl.sum(tl.where(k_mask, tl.exp(ref_logp.to(tl.float64)), 0.0), 0)
    log_rest = tl.where(has_rest & (s_ref < 1.0), tl.log(tl.maximum(1.0 - s_ref, 0.0)), neg_inf)
    log_z = _log_z(a, floor64, log_rest)
    if has_rest & (log_rest < -4.6) & (floor64 - log_z > 1.0):
        log_rest = _exact_log_rest(x_ptr + row * V, V, temperature, lse, ids, k_mask, BLOCK_V)
        log_z = _log_z(a, floor64, log_rest)

    p = tl.where(k_mask, tl.exp(a - log_z), 0.0)  # (BLOCK_K,) π(c)
    cand_mass = tl.sum(p, 0)
    rest_mass = tl.exp(floor64 + log_rest - log_z)
    kl = tl.sum(tl.where(p > 0, p * (off.to(tl.float64) - log_z), 0.0), 0)
    kl += tl.where(rest_mass > 0, rest_mass * (floor64 - log_z), 0.0)
    kl = tl.maximum(kl, 0.0)

    # sampling order: rank of each candidate by descending guided logit, ties by lower index
    j = k_offs[None, :]
    i = k_offs[:, None]
    before = ((key[None, :] > key[:, None]) | ((key[None, :] == key[:, None]) & (j < i))) & k_mask[None, :]
    rank = tl.sum(before.to(tl.int32), 1)  # (BLOCK_K,)
    cum_before = tl.sum(tl.where(before, p[None, :], 0.0), 1)
    truncate = (top_p < 1.0) & (cand_mass >= top_p)
    kept = k_mask & tl.where(truncate, cum_before < top_p, True)
    kept_mass = tl.sum(tl.where(kept, p, 0.0), 0)
    total = tl.where(truncate, kept_mass, cand_mass + rest_mass)
    target = tl.load(noise_ptr + row) * total
    hit = kept & (cum_before + p > target)
    big = BLOCK_K + 1
    first_rank = tl.min(tl.where(hit, rank, big), 0)
    last_rank = tl.max(tl.where(kept & (p > 0), rank, -1), 0)
    last_rank = tl.where(last_rank < 0, 0, last_rank)
    walk = (first_rank == big) & (truncate == 0) & (rest_mass > 0)
    pick_rank = tl.where(first_rank == big, last_rank, first_rank)
    cand = tl.sum(tl.where(k_mask & (rank == pick_rank), k_offs, 0), 0).to(tl.int64)
    token = tl.sum(tl.where(k_offs == cand, ids, 0), 0)
    if walk:
        y = _walk(x_ptr + row * V, V, temperature, lse, ids, k_mask, floor64 - log_z, target - kept_mass, BLOCK_V)
        cand = tl.where(y >= 0, -1, cand)
        token = tl.where(y >= 0, y, token)
    is_cand = cand >= 0
    cand_ref = tl.sum(tl.where(k_offs == cand, ref_logp, 0.0), 0)
    cand_off = tl.sum(tl.where(k_offs == cand, off, 0.0), 0)
    tok_ref = tl.load(x_ptr + row * V + token) / temperature - lse
    logp_ref = tl.where(is_cand, cand_ref, tok_ref)
    logp_pi = tl.where(is_cand, cand_ref.to(tl.float64) + cand_off, tok_ref.to(tl.float64) + floor64) - log_z
    tl.store(token_ptr + row, token)
    tl.store(cand_ptr + row, cand)
    tl.store(logp_ref_ptr + row, logp_ref)
    tl.store(logp_pi_ptr + row, logp_pi.to(tl.float32))
    tl.store(kl_ptr + row, kl.to(tl.float32))


@triton.jit
def _log_z(a, floor64, log_rest):
    """ln Zg = logaddexp(floor + ln(rest), logsumexp(a))."""
    rest = floor64 + log_rest
    m = tl.maximum(tl.max(a, 0), rest)
    return m + tl.log(tl.sum(tl.exp(a - m), 0) + tl.exp(rest - m))


@triton.jit
def _exact_log_rest(row_ptr, V, temperature, lse, ids, k_mask, BLOCK_V: tl.constexpr):
    """ln Σ_{non-candidates} π_ref(y), summed over the row (online logsumexp over tiles)."""
    m = tl.full((), float("-inf"), tl.float64)
    s = tl.full((), 0.0, tl.float64)
    for start in range(0, V, BLOCK_V):
        offs = (start + tl.arange(0, BLOCK_V)).to(tl.int64)
        valid = (offs < V) & (_is_candidate(offs, ids, k_mask) == 0)
        lp = tl.where(valid, tl.load(row_ptr + offs, mask=offs < V, other=0.0) / temperature - lse, float("-inf"))
        lp = lp.to(tl.float64)
        new_m = tl.maximum(m, tl.max(lp, 0))
        safe_m = tl.where(new_m == float("-inf"), 0.0, new_m)
        s = s * tl.exp(m - safe_m) + tl.sum(tl.exp(lp - safe_m), 0)
        m = new_m
    return m + tl.log(s)


@triton.jit
def _walk(row_ptr, V, temperature, lse, ids, k_mask, floor_minus_log_z, excess, BLOCK_V: tl.constexpr):
    """The first non-candidate (ascending id) whose cumulative guided mass exceeds `excess`; the last one with
    positive mass if rounding leaves none; -1 if there is none at all."""
    cum = tl.full((), 0.0, tl.float64)
    found = tl.full((), -1, tl.int64)
    last = tl.full((), -1, tl.int64)
    for start in range(0, V, BLOCK_V):
        offs = (start + tl.arange(0, BLOCK_V)).to(tl.int64)
        valid = (offs < V) & (_is_candidate(offs, ids, k_mask) == 0)
        lp = tl.load(row_ptr + offs, mask=offs < V, other=0.0) / temperature - lse
        p = tl.where(valid, tl.exp(lp.to(tl.float64) + floor_minus_log_z), 0.0)
        running = cum + tl.cumsum(p, 0)
        first = tl.min(tl.where(valid & (running > excess), offs, V), 0)
        found = tl.where((found < 0) & (first < V), first, found)
        last = tl.maximum(last, tl.max(tl.where(p > 0, offs, -1), 0))
        cum += tl.sum(p, 0)
    return tl.where(found >= 0, found, last)


@triton.jit
def _chunk_topk_kernel(
    x_ptr, part_x_ptr, part_id_ptr, part_m_ptr, part_s_ptr, V, k, n_chunks, temperature, CHUNK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    neg_inf = float("-inf")
    offs = chunk * CHUNK + tl.arange(0, CHUNK).to(tl.int64)
    valid = offs < V
    x = tl.load(x_ptr + row * V + offs, mask=valid, other=neg_inf)
    z = x / temperature
    m = tl.max(z, 0)
    safe_m = tl.where(m == neg_inf, 0.0, m)
    slot = row * n_chunks + chunk
    tl.store(part_m_ptr + slot, m)
    tl.store(part_s_ptr + slot, tl.sum(tl.exp(z - safe_m).to(tl.float64), 0))
    taken = offs < 0
    for r in range(0, k):
        eligible = valid & (taken == 0)
        xv = tl.where(eligible, x, neg_inf)
        bx = tl.max(xv, 0)
        bid = tl.min(tl.where(eligible & (xv == bx), offs, V), 0)  # V: the chunk has fewer than k logits
        tl.store(part_x_ptr + slot * k + r, bx)
        tl.store(part_id_ptr + slot * k + r, bid)
        taken = taken | (offs == bid)


@triton.jit
def _merge_topk_kernel(
    part_x_ptr, part_id_ptr, part_m_ptr, part_s_ptr, ids_ptr, logp_ptr, lse_ptr, V, k, n_chunks, temperature,
    BLOCK_C: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    neg_inf = float("-inf")
    c = tl.arange(0, BLOCK_C)
    m_c = tl.load(part_m_ptr + row * n_chunks + c, mask=c < n_chunks, other=neg_inf)
    s_c = tl.load(part_s_ptr + row * n_chunks + c, mask=c < n_chunks, other=0.0)
    m = tl.max(m_c, 0)
    safe_m = tl.where(m == neg_inf, 0.0, m)
    s = tl.sum(s_c * tl.exp((m_c - safe_m).to(tl.float64)), 0)
    lse = (m.to(tl.float64) + tl.log(s)).to(tl.float32)
    tl.store(lse_ptr + row, lse)
    n = n_chunks * k
    j = tl.arange(0, BLOCK)
    xs = tl.load(part_x_ptr + row * n + j, mask=j < n, other=neg_inf)
    cand = tl.load(part_id_ptr + row * n + j, mask=j < n, other=V)
    live = cand < V
    for r in range(0, k):
        xv = tl.where(live, xs, neg_inf)
        bx = tl.max(xv, 0)
        bid = tl.min(tl.where(live & (xv == bx), cand, V), 0)
        tl.store(ids_ptr + row * k + r, bid)
        tl.store(logp_ptr + row * k + r, bx / temperature - lse)
        live = live & (cand != bid)


def expand_candidates(
    ref_logits: torch.Tensor, temperature: float, k: int, chunk: int = _CHUNK, max_merge: int = _MAX_MERGE
) -> Candidates:
    """`fused_step.expand_candidates` by the Triton kernels; `ref_logits` float32 (B, V). `chunk` (a power of 2)
    and `max_merge` are the chunked top-k's sizes (tests make them small)."""
    x = ref_logits.contiguous()
    batch, vocab = x.shape
    dev = x.device
    ids = torch.empty(batch, k, dtype=torch.int64, device=dev)
    ref_logp = torch.empty(batch, k, dtype=torch.float32, device=dev)
    lse = torch.empty(batch, dtype=torch.float32, device=dev)
    n_chunks = triton.cdiv(vocab, chunk)
    if not batch:
        return Candidates(ids=ids, ref_logp=ref_logp, lse=lse)
    if n_chunks * k > max_merge:
        _expand_kernel[(batch,)](x, ids, ref_logp, lse, vocab, k, float(temperature), BLOCK=_BLOCK_V)
        return Candidates(ids=ids, ref_logp=ref_logp, lse=lse)
    part_x = torch.empty(batch, n_chunks, k, dtype=torch.float32, device=dev)
    part_id = torch.empty(batch, n_chunks, k, dtype=torch.int64, device=dev)
    part_m = torch.empty(batch, n_chunks, dtype=torch.float32, device=dev)
    part_s = torch.empty(batch, n_chunks, dtype=torch.float64, device=dev)
    t = float(temperature)
    _chunk_topk_kernel[(batch, n_chunks)](x, part_x, part_id, part_m, part_s, vocab, k, n_chunks, t, CHUNK=chunk)
    _merge_topk_kernel[(batch,)](
        part_x, part_id, part_m, part_s, ids, ref_logp, lse, vocab, k, n_chunks, t,
        BLOCK_C=triton.next_power_of_2(n_chunks), BLOCK=triton.next_power_of_2(n_chunks * k),
    )  # fmt: skip
    return Candidates(ids=ids, ref_logp=ref_logp, lse=lse)


def guided_sample(
    ref_logits, ids, ref_logp, lse, head_out, head, atoms, eta, floor, noise, temperature, top_p, candidates_only
) -> tuple[torch.Tensor, ...]:
    """`fused_step.guided_sample` by the Triton kernel, on the float32 arguments it prepares."""
    batch, vocab = ref_logits.shape
    k = ids.shape[1]
    if k > MAX_K:
        raise ValueError(f"the triton backend samples from at most {MAX_K} candidates, got k = {k}")
    dev = ref_logits.device
    inv_eta = eta.double().reciprocal()  # (B,)
    c_bern = D.log_expm1(inv_eta).float()
    block_k = triton.next_power_of_2(k)
    block_v = max(16, min(_BLOCK_V, _MAX_TILE // block_k))
    out = [torch.empty(batch, dtype=t, device=dev) for t in (torch.int64,) * 2 + (torch.float32,) * 3]
    if batch:
        _guided_kernel[(batch,)](
            ref_logits.contiguous(), ids.contiguous(), ref_logp.contiguous(), lse.contiguous(),
            head_out.contiguous(), atoms.contiguous(), eta.contiguous(), inv_eta.float(), c_bern,
            floor.contiguous(), noise.contiguous(), *out,
            vocab, k, atoms.numel(), float(temperature), float(top_p),
            CANDIDATES_ONLY=candidates_only, HEAD=_HEAD_IDS[head], BLOCK_K=block_k,
            BLOCK_N=triton.next_power_of_2(atoms.numel()), BLOCK_V=block_v,
        )  # fmt: skip
    return tuple(out)

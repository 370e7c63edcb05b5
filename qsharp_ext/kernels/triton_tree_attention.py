"""Triton kernel for candidate tree attention (see `qsharp_ext.kernels.tree_attention` for the semantics).

One program handles one (batch row, kv head, block of query rows). Its query rows are the g query heads
that share the kv head times the k candidates, flattened head-major (row = head_in_group · k + i), so
each prefix tile of K and V is loaded once for all of them: the prefix is shared, never copied. The
program starts from the candidate's own key/value (always visible, so the running maximum is finite from
the first step and a fully masked prefix needs no special case), then streams the prefix in tiles of
BLOCK_N positions with an online softmax in float32.

What it knows: float16, bfloat16 and float32 inputs with any strides; head dims up to 256; GPU tensors,
or CPU tensors under TRITON_INTERPRET=1 (set before this module is imported: Triton reads it when the
kernel is decorated). What it does not: gradients, float64, trees deeper than one level. When g·k is
larger than BLOCK_M the rows are split over several programs, which then each read the prefix.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from qsharp_ext.kernels.tree_attention import check_tree_attention_inputs

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
BLOCK_N = 64  # prefix positions per tile


@triton.jit
def _tree_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    mask_ptr,
    out_ptr,
    stride_qb,
    stride_qh,
    stride_qk,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_mb,
    stride_mn,
    stride_ob,
    stride_oh,
    stride_ok,
    stride_od,
    n_kv_heads,
    n_prefix,
    n_cand,
    head_dim,
    scale,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    b = tl.program_id(1) // n_kv_heads
    kv_head = tl.program_id(1) % n_kv_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (M,): head_in_group · k + candidate
    head = kv_head * GROUP + rows // n_cand  # (M,) query head
    cand = rows % n_cand  # (M,) candidate index i
    dims = tl.arange(0, BLOCK_D)  # (D,)
    row_dim_ok = (rows < GROUP * n_cand)[:, None] & (dims < head_dim)[None, :]  # (M, D)
    k_base = k_ptr + b * stride_kb + kv_head * stride_kh
    v_base = v_ptr + b * stride_vb + kv_head * stride_vh

    q_offsets = b * stride_qb + head[:, None] * stride_qh + cand[:, None] * stride_qk + dims[None, :] * stride_qd
    q = tl.load(q_ptr + q_offsets, mask=row_dim_ok, other=0.0)  # (M, D)

    # The candidate's own key at position P + i: always visible, so it seeds the online softmax.
    own = n_prefix + cand  # (M,)
    k_own = tl.load(k_base + own[:, None] * stride_kn + dims[None, :] * stride_kd, mask=row_dim_ok, other=0.0)
    v_own = tl.load(v_base + own[:, None] * stride_vn + dims[None, :] * stride_vd, mask=row_dim_ok, other=0.0)
    m_i = tl.sum(q.to(tl.float32) * k_own.to(tl.float32), axis=1) * scale  # (M,) running max
    l_i = tl.full([BLOCK_M], 1.0, dtype=tl.float32)  # (M,) running sum of exp(s - m_i)
    acc = v_own.to(tl.float32)  # (M, D) running sum of exp(s - m_i) · v

    for start in range(0, n_prefix, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # (N,)
        in_prefix = cols < n_prefix
        allowed = tl.load(mask_ptr + b * stride_mb + cols * stride_mn, mask=in_prefix, other=0) != 0  # (N,)
        col_dim_ok = in_prefix[:, None] & (dims < head_dim)[None, :]  # (N, D)
        k_tile = tl.load(k_base + cols[:, None] * stride_kn + dims[None, :] * stride_kd, mask=col_dim_ok, other=0.0)
        v_tile = tl.load(v_base + cols[:, None] * stride_vn + dims[None, :] * stride_vd, mask=col_dim_ok, other=0.0)
        s = tl.dot(q, tl.trans(k_tile), input_precision=INPUT_PRECISION) * scale  # (M, N) float32
        s = tl.where(allowed[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: m_i is
        alpha = tl.exp(m_i - m_new)  # (M,) rescales what was accumulated so far
        p = tl.exp(s - m_new[:, None])  # (M, N), 0 where masked
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v_tile.dtype), v_tile, input_precision=INPUT_PRECISION)
        m_i = m_new

    out = acc / l_i[:, None]  # (M, D)
    o_offsets = b * stride_ob + head[:, None] * stride_oh + cand[:, None] * stride_ok + dims[None, :] * stride_od
    tl.store(out_ptr + o_offsets, out.to(out_ptr.dtype.element_ty), mask=row_dim_ok)


def interpreted() -> bool:
    """Whether this kernel, and Triton's own library, were decorated for the CPU interpreter."""
    return isinstance(_tree_attention_kernel, InterpretedFunction) and isinstance(tl.standard.sum, InterpretedFunction)


def tree_attention_triton(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_mask: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """`tree_attention` by the Triton kernel: (B, H, k, d) in the query's dtype."""
    g = check_tree_attention_inputs(query, key, value, prefix_mask)
    if query.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the Triton tree attention kernel takes float16, bfloat16 or float32, got {query.dtype}")
    batch, _, k, head_dim = query.shape
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"the Triton tree attention kernel takes head dims up to {MAX_HEAD_DIM}, got {head_dim}")
    if query.device.type == "cpu" and not interpreted():
        raise RuntimeError(
            "Triton runs on CPU tensors only under TRITON_INTERPRET=1, set before triton and "
            "qsharp_ext.kernels.triton_tree_attention are first imported"
        )
    n_kv_heads, n_prefix = key.shape[1], prefix_mask.shape[1]
    scale = head_dim**-0.5 if scale is None else float(scale)
    mask = prefix_mask.to(torch.int8)  # (B, P): Triton loads bytes, not torch bools
    if n_prefix == 0:  # never read; an empty tensor may have a null pointer, which a GPU launch can reject
        mask = torch.zeros(batch, 1, dtype=torch.int8, device=query.device)
    out = torch.empty_like(query, memory_format=torch.contiguous_format)  # (B, H, k, d)
    block_m = min(64, max(16, triton.next_power_of_2(g * k)))
    block_d = max(16, triton.next_power_of_2(head_dim))
    grid = (triton.cdiv(g * k, block_m), batch * n_kv_heads)
    _tree_attention_kernel[grid](
        query,
        key,
        value,
        mask,
        out,
        *query.stride(),
        *key.stride(),
        *value.stride(),
        *mask.stride(),
        *out.stride(),
        n_kv_heads,
        n_prefix,
        k,
        head_dim,
        scale,
        GROUP=g,
        BLOCK_M=block_m,
        BLOCK_N=BLOCK_N,
        BLOCK_D=block_d,
        INPUT_PRECISION="ieee" if query.dtype == torch.float32 else None,  # exact float32, not TF32
    )
    return out

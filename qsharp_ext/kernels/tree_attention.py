"""Candidate tree attention: k candidate next tokens scored in one pass over a shared prefix cache.

A V-type value model scores k candidate next tokens at once: the k candidates sit at the same position,
right after a cached prefix of P positions, and each one sees the prefix and itself only; the candidates
are siblings, not a chain, so they never see each other. The key/value tensors are laid out as a Hugging
Face KV cache holds them after a forward of the k new tokens: the P cached positions, then the k
candidates' own keys/values. The prefix is read in place; it is never copied once per candidate.

What it knows: a boolean prefix mask per row (False = left padding, or any position a row may not see),
grouped-query attention (query head h uses kv head h // g), a custom softmax scale. Softmax runs in
float32 (float64 for float64 inputs); the output has the query's dtype.

What it does not do: trees deeper than one level (candidates of candidates), paged or quantized caches,
sliding windows, ALiBi or other score biases, dropout, and gradients through the Triton kernel (it is
an inference kernel; the torch path is differentiable).

Backends (`qsharp_ext.kernels.dispatch.resolve_backend`): `triton` and `cuda` run the Triton kernel of
`qsharp_ext.kernels.triton_tree_attention` (there is no hand-written CUDA attention kernel: on a GPU the
Triton kernel is the compiled one); `torch` and `cpp` run `tree_attention_reference`, torch's
scaled_dot_product_attention with the tree mask (there is no C++ attention kernel either: on the CPU,
SDPA is already a fused ATen kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qsharp_ext.kernels.dispatch import resolve_backend


def _check_prefix_mask(prefix_mask: torch.Tensor) -> None:
    if prefix_mask.dim() != 2 or prefix_mask.dtype != torch.bool:
        shape = tuple(prefix_mask.shape)
        raise ValueError(f"prefix_mask must be a (B, P) bool tensor, got {prefix_mask.dtype} {shape}")


def tree_attention_mask(prefix_mask: torch.Tensor, k: int) -> torch.Tensor:
    """The (B, 1, k, P + k) boolean mask: candidate i sees the allowed prefix positions and position P + i.

    True means "may attend", the convention of torch SDPA and of Hugging Face 4D attention masks.
    """
    _check_prefix_mask(prefix_mask)
    if k < 1:
        raise ValueError(f"tree attention needs at least one candidate, got k={k}")
    batch, n_prefix = prefix_mask.shape
    prefix = prefix_mask[:, None, None, :].expand(batch, 1, k, n_prefix)  # (B, 1, k, P)
    own = torch.eye(k, dtype=torch.bool, device=prefix_mask.device).expand(batch, 1, k, k)  # (B, 1, k, k)
    return torch.cat([prefix, own], dim=-1)  # (B, 1, k, P + k)


def check_tree_attention_inputs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix_mask: torch.Tensor
) -> int:
    """Raise ValueError on inconsistent shapes, dtypes or devices; return g, the query heads per kv head."""
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            "query must be (B, H, k, d) and key/value (B, Hkv, P + k, d); got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if key.shape != value.shape:
        raise ValueError(f"key and value must have the same shape, got {tuple(key.shape)} and {tuple(value.shape)}")
    _check_prefix_mask(prefix_mask)
    batch, n_heads, k, head_dim = query.shape
    n_prefix = prefix_mask.shape[1]
    if k < 1:
        raise ValueError("tree attention needs at least one candidate (query.shape[2] == 0)")
    if key.shape[0] != batch or prefix_mask.shape[0] != batch:
        raise ValueError(
            f"batch sizes differ: query {batch}, key/value {key.shape[0]}, prefix_mask {prefix_mask.shape[0]}"
        )
    if key.shape[3] != head_dim:
        raise ValueError(f"head dims differ: query {head_dim}, key/value {key.shape[3]}")
    if key.shape[2] != n_prefix + k:
        raise ValueError(
            f"key/value must hold the P={n_prefix} prefix positions then the k={k} candidates "
            f"(P + k = {n_prefix + k} positions), got {key.shape[2]}"
        )
    n_kv_heads = key.shape[1]
    if n_kv_heads < 1 or n_heads % n_kv_heads != 0:
        raise ValueError(f"query heads ({n_heads}) must be a multiple of key/value heads ({n_kv_heads})")
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    if not (query.device == key.device == value.device == prefix_mask.device):
        raise ValueError("query, key, value and prefix_mask must be on the same device")
    return n_heads // n_kv_heads


def tree_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_mask: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Tree attention by torch SDPA with the `tree_attention_mask`: the reference and the CPU path.

    Grouped-query attention without repeating the kv heads: the g query heads that share a kv head are
    stacked along the query axis, (B, H, k, d) -> (B, Hkv, g·k, d), and the mask is repeated g times.
    """
    g = check_tree_attention_inputs(query, key, value, prefix_mask)
    batch, n_heads, k, head_dim = query.shape
    n_kv_heads = key.shape[1]
    compute = torch.promote_types(query.dtype, torch.float32)  # float32 softmax for half inputs
    q = query.reshape(batch, n_kv_heads, g * k, head_dim).to(compute)  # (B, Hkv, g·k, d)
    mask = tree_attention_mask(prefix_mask, k).repeat(1, 1, g, 1)  # (B, 1, g·k, P + k)
    out = F.scaled_dot_product_attention(q, key.to(compute), value.to(compute), attn_mask=mask, scale=scale)
    return out.reshape(batch, n_heads, k, head_dim).to(query.dtype)  # (B, H, k, d)


def tree_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_mask: torch.Tensor,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention of k candidates to a shared prefix cache and to themselves; returns (B, H, k, d).

    query (B, H, k, d); key/value (B, Hkv, P + k, d): the prefix cache, then the candidates' own keys and
    values; prefix_mask (B, P) bool, True where a prefix position may be attended. Query i attends to
    {j < P : prefix_mask[b, j]} ∪ {P + i}. `scale` defaults to d**-0.5. `backend` as in
    `resolve_backend`: triton/cuda run the Triton kernel, torch/cpp the SDPA reference.
    """
    chosen = resolve_backend(query.device, backend)
    if chosen in ("triton", "cuda"):
        try:
            from qsharp_ext.kernels.triton_tree_attention import tree_attention_triton
        except ImportError as error:
            raise RuntimeError(f"the {chosen} backend of tree attention needs the triton package") from error
        return tree_attention_triton(query, key, value, prefix_mask, scale=scale)
    return tree_attention_reference(query, key, value, prefix_mask, scale=scale)

"""The candidate tree attention mask: k candidate next tokens scored in one pass over a shared prefix cache.

A V-type value model scores k candidate next tokens at once: the k candidates sit at the same position,
right after a cached prefix of P positions, and each one sees the prefix and itself only; the candidates
are siblings, not a chain, so they never see each other. The key/value layout is a Hugging Face KV cache's
after a forward of the k new tokens: the P cached positions, then the k candidates' own keys/values, so the
prefix is read in place, never copied once per candidate. The token sampled at the previous step can ride
along in the same pass (`new_prefix`), so the value model's cache catches up without a pass of its own.
`qsharp_ext.scoring` turns this mask into the model's 4-D additive attention mask, and the model's own
attention (SDPA or eager) does the rest.
"""

from __future__ import annotations

import torch


def _check_prefix_mask(prefix_mask: torch.Tensor) -> None:
    if prefix_mask.dim() != 2 or prefix_mask.dtype != torch.bool:
        shape = tuple(prefix_mask.shape)
        raise ValueError(f"prefix_mask must be a (B, P) bool tensor, got {prefix_mask.dtype} {shape}")


def tree_attention_mask(prefix_mask: torch.Tensor, k: int, new_prefix: int = 0) -> torch.Tensor:
    """The (B, 1, new_prefix + k, P + k) boolean mask: candidate i sees the allowed prefix positions and P + i.

    The last `new_prefix` prefix positions are not cached yet: they enter the cache in the same pass, ahead of
    the candidates, so they are queries too (the first rows), each seeing the allowed prefix up to itself.
    True means "may attend", the convention of torch SDPA and of Hugging Face 4D attention masks.
    """
    _check_prefix_mask(prefix_mask)
    if k < 1:
        raise ValueError(f"tree attention needs at least one candidate, got k={k}")
    batch, n_prefix = prefix_mask.shape
    if not 0 <= new_prefix <= n_prefix:
        raise ValueError(f"new_prefix must be between 0 and the prefix length {n_prefix}, got {new_prefix}")
    device = prefix_mask.device
    prefix = prefix_mask[:, None, None, :].expand(batch, 1, k, n_prefix)  # (B, 1, k, P)
    own = torch.eye(k, dtype=torch.bool, device=device).expand(batch, 1, k, k)  # (B, 1, k, k)
    rows = torch.cat([prefix, own], dim=-1)  # (B, 1, k, P + k)
    if new_prefix == 0:
        return rows
    last_seen = torch.arange(n_prefix - new_prefix, n_prefix, device=device)[:, None]  # (new_prefix, 1)
    causal = torch.arange(n_prefix, device=device) <= last_seen  # (new_prefix, P)
    chain = torch.cat([prefix_mask[:, None, None, :] & causal, own.new_zeros(batch, 1, new_prefix, k)], dim=-1)
    return torch.cat([chain, rows], dim=2)  # (B, 1, new_prefix + k, P + k)

"""The candidate tree attention mask: k candidate next tokens scored in one pass over a shared prefix cache.

A V-type value model scores k candidate next tokens at once: the k candidates sit at the same position,
right after a cached prefix of P positions, and each one sees the prefix and itself only; the candidates
are siblings, not a chain, so they never see each other. The key/value layout is a Hugging Face KV cache's
after a forward of the k new tokens: the P cached positions, then the k candidates' own keys/values, so the
prefix is read in place, never copied once per candidate. `qsharp_ext.scoring` turns this mask into the
model's 4-D additive attention mask, and the model's own attention (SDPA or eager) does the rest.
"""

from __future__ import annotations

import torch


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

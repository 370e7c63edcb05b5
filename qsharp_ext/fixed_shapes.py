"""Which cache slots each row's queries may read: a mask that grows per step, or one of fixed width.

Decoding appends one token per row and step. `GrowingSlots` (the default) hands the models a 2D attention mask
one column wider each step over caches that hold exactly the tokens run (kv_cache.ReservedCache).
`FixedSlots` keeps one (rows, capacity) table of filled slots over caches that are always attended whole
(kv_cache.FixedCache) and hands the models 4D masks cut from it: every step then has the same shapes, only
tensor contents change, which is what capturing a step as a CUDA graph needs. Both give the same queries the
same keys, so the same outputs up to float rounding (tests/engine/test_fixed_shapes.py).

A V-type value model's candidate pass (scoring.py) runs the pending token (`new` = 1) and k candidates: the
pending token sees the filled slots, candidate j those and its own slot, the j-th after the pending token's.
"""

from __future__ import annotations

import torch

from qsharp_ext.kernels.tree_attention import tree_attention_mask


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4D mask (True: may attend) as the additive float mask the models take: 0 or dtype's minimum."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def model_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The attention_mask argument for a model: a 2D padding mask as it is, a boolean 4D mask made additive."""
    return additive_mask(mask, dtype) if mask.dim() == 4 else mask


def fixed_prompt_mask(prompt_mask: torch.Tensor, capacity: int) -> torch.Tensor:
    """(P, 1, L, capacity) boolean: each prompt token sees the real tokens up to itself (a padding token sees
    itself, so that no row of the softmax is empty); slots past the prompt are empty."""
    length, device = prompt_mask.shape[1], prompt_mask.device
    query, key = torch.arange(length, device=device)[:, None], torch.arange(capacity, device=device)
    causal = key[None, :] <= query  # (L, capacity)
    real = torch.nn.functional.pad(prompt_mask.bool(), (0, capacity - length))  # (P, capacity)
    allowed = (causal[None] & real[:, None, :]) | (key[None, :] == query)[None]  # (P, L, capacity)
    return allowed[:, None]


class GrowingSlots:
    """A 2D mask (N, tokens so far), one column longer per step; the models build their own causal masks."""

    def __init__(self, attention_mask: torch.Tensor) -> None:
        self.mask = attention_mask  # (N, L)

    def append(self) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)

    def filled(self) -> torch.Tensor:
        """(N, 1) tokens each row holds (real ones: left padding does not count)."""
        return self.mask.sum(-1, keepdim=True)

    def query_mask(self, capacity: int) -> torch.Tensor:
        """The mask of one new token that is already appended."""
        return self.mask

    def candidate_mask(self, k: int, new: int) -> torch.Tensor:
        """(N, 1, new + k, tokens + k) for `new` appended tokens not yet cached, then k candidates."""
        return tree_attention_mask(self.mask.bool(), k, new)


class FixedSlots:
    """An (N, capacity) table of filled slots: the prompt's real tokens, then one slot per step."""

    def __init__(self, attention_mask: torch.Tensor, capacity: int) -> None:
        n, length = attention_mask.shape
        self.table = torch.zeros(n, capacity, dtype=torch.bool, device=attention_mask.device)
        self.table[:, :length] = attention_mask.bool()
        self.next = torch.full((1,), length, dtype=torch.long, device=attention_mask.device)  # the next step's slot
        self.slots = torch.arange(capacity, device=attention_mask.device)  # (capacity,)

    def append(self) -> None:
        self.table.index_fill_(1, self.next, True)
        self.next += 1

    def filled(self) -> torch.Tensor:
        return self.table.sum(-1, keepdim=True)

    def query_mask(self, capacity: int) -> torch.Tensor:
        """(N, 1, 1, capacity): the last appended token reads every filled slot of a cache of `capacity`."""
        return self.table[:, None, None, :capacity]

    def candidate_mask(self, k: int, new: int) -> torch.Tensor:
        """(N, 1, new + k, capacity): the `new` appended tokens (0 or 1: the last one) see the filled slots;
        candidate j also its own slot, the j-th free one."""
        own = self.slots[None, :] == self.next + torch.arange(k, device=self.next.device)[:, None]  # (k, capacity)
        rows = self.table[:, None, :] | own[None]  # (N, k, capacity)
        if new:
            rows = torch.cat([self.table[:, None, :], rows], dim=1)  # (N, 1 + k, capacity)
        return rows[:, None]

"""One backbone pass for a prompt and many completions of it: the hidden states each would get alone.

Why: roll-outs and evaluation samples come many per prompt (16, 8), and the prompt is most of each sequence.
The prompt and every completion are packed into one sequence under an attention mask that lets each
completion see the prompt and its own earlier tokens only (a tree: the prompt is the trunk, each completion
a branch), every token at the position it has in its own sequence. Equal to one pass per sequence up to float
rounding (tests/engine/test_frozen_features.py, in float64). Used where nothing is trained through the
backbone: a frozen trunk's training features and best-of-n scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PACKED_TOKENS = 2048  # completion tokens packed under one prompt in one pass (the mask is quadratic in them)


def packed_hidden(backbone: torch.nn.Module, prompt: list[int], completions: Sequence[list[int]]) -> list:
    """Hidden states (len(c) + 1, H) of each completion c at positions P − 1 … P + len(c) − 1 of its own
    sequence prompt + c (P = len(prompt)), from as few passes over the prompt and the completions as
    PACKED_TOKENS allows."""
    out, chunk, tokens = [], [], 0
    for c in completions:
        if chunk and tokens + len(c) > PACKED_TOKENS:
            out += _packed_pass(backbone, prompt, chunk)
            chunk, tokens = [], 0
        chunk.append(c)
        tokens += len(c)
    return out + (_packed_pass(backbone, prompt, chunk) if chunk else [])


def _packed_pass(backbone: torch.nn.Module, prompt: list[int], completions: Sequence[list[int]]) -> list:
    """`packed_hidden` for completions that fit one pass."""
    device = next(backbone.parameters()).device
    p, lens = len(prompt), [len(c) for c in completions]
    ids = torch.tensor(prompt + [t for c in completions for t in c], device=device)  # (L,)
    position = torch.cat([torch.arange(p), *(p + torch.arange(n) for n in lens)]).to(device)  # (L,)
    branch = torch.cat([torch.zeros(p, dtype=torch.long), *(torch.full((n,), i + 1) for i, n in enumerate(lens))])
    branch = branch.to(device)  # 0: the prompt; i + 1: completion i
    order = torch.arange(len(ids), device=device)
    allowed = (order[:, None] >= order[None, :]) & ((branch[None, :] == 0) | (branch[:, None] == branch[None, :]))
    dtype = next(backbone.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    out = backbone(
        input_ids=ids[None], attention_mask=mask[None, None], position_ids=position[None], use_cache=False
    ).last_hidden_state[0]  # (L, H)
    hidden, start = [], p
    for n in lens:
        hidden.append(torch.cat([out[p - 1 : p], out[start : start + n]]))
        start += n
    return hidden

"""One backbone pass for a prompt and many completions of it: the hidden states each would get alone.

Why: roll-outs and evaluation samples come many per prompt (16, 8), and the prompt is most of each sequence.
The prompt and every completion are packed into one sequence under an attention mask that lets each
completion see the prompt and its own earlier tokens only (a tree: the prompt is the trunk, each completion
a branch), every token at the position it has in its own sequence. Equal to one pass per sequence up to float
rounding (tests/engine/test_frozen_features.py, in float64). Used for a frozen trunk's training features,
best-of-n scoring and, with `pack_prompts`, value-model training (train_batches.py builds its batches with
`tree_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qsharp_ext.fixed_shapes import additive_mask

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
    position, branch = (torch.tensor(x, device=device) for x in tree_layout(p, lens))  # (L,) each
    mask = tree_mask(branch[None], next(backbone.parameters()).dtype)  # (1, 1, L, L)
    out = backbone(input_ids=ids[None], attention_mask=mask, position_ids=position[None], use_cache=False)
    out = out.last_hidden_state[0]  # (L, H)
    hidden, start = [], p
    for n in lens:
        hidden.append(torch.cat([out[p - 1 : p], out[start : start + n]]))
        start += n
    return hidden


def tree_layout(prompt_len: int, completion_lens: Sequence[int]) -> tuple[list[int], list[int]]:
    """(position, branch) of each token of a prompt followed by its completions: every token at its position in its
    own sequence prompt + completion; branch 0 on the prompt, i + 1 on completion i."""
    position = [*range(prompt_len), *(prompt_len + t for n in completion_lens for t in range(n))]
    branch = [0] * prompt_len + [i + 1 for i, n in enumerate(completion_lens) for _ in range(n)]
    return position, branch


def tree_mask(branch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask (B, 1, T, T) of packed sequences: a token sees the earlier tokens of the
    prompt (branch 0) and of its own branch. Shapes: `branch` (B, T); padding is a branch of its own (−1), after
    every real token, so no real token sees it and no row is empty."""
    order = torch.arange(branch.shape[1], device=branch.device)
    causal = order[:, None] >= order[None, :]  # (T, T)
    allowed = causal & ((branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :]))  # (B, T, T)
    return additive_mask(allowed[:, None], dtype)

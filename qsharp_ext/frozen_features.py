"""A frozen backbone's hidden states at every training target, computed once, each prompt shared by its roll-outs.

Why: a value head on frozen layers (π_ref's own trunk: `backbone_lr_scale` 0) learns from hidden states that
never change, so running the backbone on every batch of every step repeats the same work; and the roll-outs
of one prompt (16 per prompt in a DAgger round) repeat that prompt, most of each sequence. Here a prompt and
its roll-outs' completions are packed into one sequence under an attention mask that lets each completion
see the prompt and its own earlier tokens only (a tree: the prompt is the trunk, each completion a branch),
every token at the position it has in its own sequence. One pass gives every roll-out's hidden states; the
head then trains and is evaluated on them at no backbone cost. They equal the per-sequence pass up to float
rounding (tests/engine/test_frozen_features.py, in float64).

It knows roll-outs, their targets (train_batches.py) and a causal LM backbone; nothing of losses or optimizers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from qsharp_ext.rollout_data import Rollout
from qsharp_ext.train_batches import rollout_targets

BUDGET_BYTES = 2 * 2**30  # larger feature tables are not kept: training then runs the backbone per batch
PACKED_TOKENS = 2048  # completion tokens packed under one prompt in one pass (the mask is quadratic in them)


def packed_hidden(backbone: torch.nn.Module, prompt: list[int], completions: Sequence[list[int]]) -> list:
    """Hidden states (len(c) + 1, H) of each completion c at positions P − 1 … P + len(c) − 1 of its own
    sequence prompt + c (P = len(prompt)), from one pass over the prompt and every completion."""
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


class FrozenFeatures:
    """The backbone's hidden state at every target of every roll-out given, looked up by roll-out."""

    def __init__(
        self, backbone: torch.nn.Module, rollouts: Sequence[Rollout], q_type: bool, prefix_extension: bool,
        progress: bool = False,
    ) -> None:  # fmt: skip
        by_prompt: dict[tuple[int, ...], list[Rollout]] = {}
        for r in rollouts:
            by_prompt.setdefault(tuple(r.prompt_ids), []).append(r)
        self._rows: dict[int, torch.Tensor] = {}  # by id(roll-out); the roll-outs are kept so that ids stay theirs
        self._rollouts = list(rollouts)
        with torch.no_grad():
            for prompt, group in tqdm(by_prompt.items(), desc="frozen features", unit="prompt", disable=not progress):
                for chunk in _chunks(group):
                    hidden = packed_hidden(backbone, list(prompt), [r.completion_ids for r in chunk])
                    for r, h in zip(chunk, hidden, strict=True):
                        first = len(prompt) - 1  # h[0] is the prompt's last position
                        targets = [t - first for t in rollout_targets(r, q_type, prefix_extension)]
                        self._rows[id(r)] = h[targets]

    def at_targets(self, rollouts: Sequence[Rollout]) -> torch.Tensor:
        """Hidden states (N, H) of the roll-outs' targets, in `collate`'s order."""
        return torch.cat([self._rows[id(r)] for r in rollouts])


def feature_bytes(n_targets: int, hidden_size: int, dtype: torch.dtype) -> int:
    return n_targets * hidden_size * torch.finfo(dtype).bits // 8


def _chunks(group: list[Rollout]) -> list[list[Rollout]]:
    """Consecutive roll-outs of one prompt, at most PACKED_TOKENS completion tokens each (at least one)."""
    chunks: list[list[Rollout]] = [[]]
    tokens = 0
    for r in group:
        if chunks[-1] and tokens + len(r.completion_ids) > PACKED_TOKENS:
            chunks.append([])
            tokens = 0
        chunks[-1].append(r)
        tokens += len(r.completion_ids)
    return chunks

"""A frozen backbone's hidden states at every training target, computed once, each prompt shared by its roll-outs.

Why: a value head on frozen layers (π_ref's own trunk: `backbone_lr_scale` 0) learns from hidden states that
never change, so running the backbone on every batch of every step repeats the same work; and the roll-outs
of one prompt (16 per prompt in a DAgger round) repeat that prompt, most of each sequence. Here a prompt and
its roll-outs' completions go through the backbone in one packed pass (prompt_packing.py). The head then
trains and is evaluated on the hidden states at no backbone cost; they equal the per-sequence pass up to
float rounding (tests/engine/test_frozen_features.py, in float64).

It knows roll-outs, their targets (train_batches.py) and a causal LM backbone; nothing of losses or optimizers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from qsharp_ext.prompt_packing import packed_hidden
from qsharp_ext.rollout_data import Rollout
from qsharp_ext.train_batches import rollout_targets

BUDGET_BYTES = 2 * 2**30  # larger feature tables are not kept: training then runs the backbone per batch


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
                hidden = packed_hidden(backbone, list(prompt), [r.completion_ids for r in group])
                for r, h in zip(group, hidden, strict=True):
                    first = len(prompt) - 1  # h[0] is the prompt's last position
                    targets = [t - first for t in rollout_targets(r, q_type, prefix_extension)]
                    self._rows[id(r)] = h[targets]

    def at_targets(self, rollouts: Sequence[Rollout]) -> torch.Tensor:
        """Hidden states (N, H) of the roll-outs' targets, in `collate`'s order."""
        return torch.cat([self._rows[id(r)] for r in rollouts])


def feature_bytes(n_targets: int, hidden_size: int, dtype: torch.dtype) -> int:
    return n_targets * hidden_size * torch.finfo(dtype).bits // 8

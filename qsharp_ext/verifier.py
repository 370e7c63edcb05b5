"""Best-of-n by the value model: one score per finished answer, folded from its values at every completion token.

After each token the value model predicts the final reward π_ref reaches from there, so a finished answer has
as many candidate scores as tokens: the value once it is all written (`last`), the mean over its tokens
(`mean`), or the lowest (`min`: an answer is as good as its weakest step). Which one ranks a prompt's answers
best is measured, not assumed: `evaluate` writes every sample's token values to samples.jsonl and
`python/best_of_n.py` compares the rules on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from qsharp_ext.prompt_packing import packed_hidden
from qsharp_ext.value_model import ValueModel

ScoreRule = Literal["last", "mean", "min"]
SCORE_RULES: tuple[ScoreRule, ...] = ("last", "mean", "min")


@torch.no_grad()
def token_values(
    value_model: ValueModel, sequences: Sequence[list[int]], prompt_lens: Sequence[int]
) -> list[list[float]]:
    """The value model's predicted final reward after each completion token of every sequence (prompt +
    completion; `prompt_lens[i]` tokens of sequence i are the prompt), one list per sequence. The samples of
    one prompt share one packed pass (prompt_packing.py)."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (sequence, n) in enumerate(zip(sequences, prompt_lens, strict=True)):
        by_prompt.setdefault(tuple(sequence[:n]), []).append(i)
    out: list[list[float]] = [[] for _ in sequences]
    for prompt, rows in by_prompt.items():
        completions = [sequences[i][len(prompt) :] for i in rows]
        for i, completion, hidden in zip(
            rows, completions, packed_hidden(value_model.backbone, list(prompt), completions), strict=True
        ):
            out[i] = _completion_values(value_model, hidden, completion)
    return out


def _completion_values(value_model: ValueModel, hidden: torch.Tensor, completion: list[int]) -> list[float]:
    """Values after each token of `completion` from its hidden states (len + 1, H) at positions P − 1 … end."""
    if not completion:
        return []
    if value_model.is_q_type:  # token j's value: the head's row for it, read one position earlier
        ids = torch.tensor(completion, device=hidden.device).unsqueeze(1)  # (C, 1)
        head = value_model.candidate_outputs(hidden[:-1], ids).squeeze(1)
    else:  # token j's value: the head's output at its own position
        head = value_model.head_outputs(hidden[1:])
    return value_model.expected_reward(head).double().cpu().tolist()


def answer_score(values: Sequence[float], rule: ScoreRule) -> float:
    """One score from an answer's token values (an empty completion scores nothing: −inf, never picked)."""
    if not values:
        return float("-inf")
    if rule == "last":
        return values[-1]
    if rule == "mean":
        return sum(values) / len(values)
    return min(values)

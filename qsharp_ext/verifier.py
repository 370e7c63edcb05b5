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

from qsharp_ext.value_model import ValueModel

ScoreRule = Literal["last", "mean", "min"]
SCORE_RULES: tuple[ScoreRule, ...] = ("last", "mean", "min")


def token_values(
    value_model: ValueModel, sequences: Sequence[list[int]], prompt_lens: Sequence[int], chunk: int = 32
) -> list[list[float]]:
    """The value model's predicted final reward after each completion token of every sequence (prompt +
    completion; `prompt_lens[i]` tokens of sequence i are the prompt), one list per sequence."""
    out: list[list[float]] = []
    for i in range(0, len(sequences), chunk):
        out += _token_values(value_model, sequences[i : i + chunk], prompt_lens[i : i + chunk])
    return out


@torch.no_grad()
def _token_values(value_model: ValueModel, sequences: Sequence[list[int]], prompt_lens: Sequence[int]) -> list:
    device = next(value_model.parameters()).device
    width = max(map(len, sequences))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in sequences], device=device)  # (B, T)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=device)
    hidden, _ = value_model.hidden(ids, attention_mask=mask, use_cache=False)  # (B, T, H)
    if value_model.is_q_type:  # token t's value is the head's row for ids[t], read at position t − 1
        flat = hidden[:, :-1].flatten(0, 1)  # (B·(T−1), H)
        head = value_model.candidate_outputs(flat, ids[:, 1:].flatten().unsqueeze(1)).squeeze(1)
        values = value_model.expected_reward(head).view(len(sequences), width - 1)
        shift = 1
    else:  # token t's value is the head's output at position t
        values = value_model.expected_reward(value_model.head_outputs(hidden))  # (B, T)
        shift = 0
    values = values.double().cpu()
    return [
        values[b, start - shift : len(s) - shift].tolist()
        for b, (s, start) in enumerate(zip(sequences, prompt_lens, strict=True))
    ]


def answer_score(values: Sequence[float], rule: ScoreRule) -> float:
    """One score from an answer's token values (an empty completion scores nothing: −inf, never picked)."""
    if not values:
        return float("-inf")
    if rule == "last":
        return values[-1]
    if rule == "mean":
        return sum(values) / len(values)
    return min(values)

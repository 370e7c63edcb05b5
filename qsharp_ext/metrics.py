"""How good a value model's predictions are: ROC-AUC (pooled or within groups), calibration error, accuracy.

Each takes 1-D predictions and binary outcomes (any array-like: tensors, lists, NumPy arrays) and returns a
Python float. A metric that is undefined on its input (no samples, or ROC-AUC with only one class present)
returns None rather than NaN, so results stay valid JSON and a missing value is never mistaken for a number.
They know nothing of models or rewards: turning a reward into a binary outcome is the caller's choice.
"""

from __future__ import annotations

from typing import Any

import torch


def _vector(values: Any) -> torch.Tensor:
    out = torch.as_tensor(values, dtype=torch.float64).flatten()
    if out.isnan().any():
        raise ValueError("predictions and outcomes must not contain NaN")
    return out


def _pair(scores: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    scores, labels = _vector(scores), _vector(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.numel()} predictions but {labels.numel()} outcomes")
    if ((labels != 0) & (labels != 1)).any():
        raise ValueError("outcomes must be 0 or 1")
    return scores, labels.bool()


def _mann_whitney(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(U, pairs): positive–negative pairs won by the positive (ties counting one half), and their number."""
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.0, 0
    _, group, counts = torch.unique(scores, return_inverse=True, return_counts=True)  # groups of tied scores
    last_rank = counts.cumsum(0).double()  # 1-based rank of the last member of each group
    ranks = (last_rank - (counts - 1) / 2)[group]  # average rank of every score
    return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2).item(), n_pos * n_neg


def roc_auc(scores: Any, labels: Any) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting one half.

    Computed from average ranks (Mann–Whitney U), O(n log n). None when either class is absent.
    """
    u, pairs = _mann_whitney(*_pair(scores, labels))
    return u / pairs if pairs else None


def _grouped_mann_whitney(scores: torch.Tensor, labels: torch.Tensor, groups: list) -> tuple[float, int]:
    """(U, pairs) summed over the groups: only pairs whose members share a group count."""
    members: dict = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    u_sum, pair_sum = 0.0, 0
    for index in members.values():
        if len(index) > 1:
            u, pairs = _mann_whitney(scores[index], labels[index])
            u_sum, pair_sum = u_sum + u, pair_sum + pairs
    return u_sum, pair_sum


def within_group_roc_auc(scores: Any, labels: Any, groups: list, same: list | None = None) -> float | None:
    """ROC-AUC over the positive–negative pairs that share a group, ties counting one half.

    `groups[i]` is any hashable key of sample i. Pairs that also share a key of `same` (nested in the
    groups: e.g. identical prefixes, which no model can tell apart) are left out. For a value model,
    grouping by (prompt, step) asks whether it ranks the continuations of one prompt, which is what
    guidance uses; the pooled ROC-AUC mostly measures which prompts are hard. None when no pair counts.
    """
    scores, labels = _pair(scores, labels)
    if len(groups) != scores.numel() or (same is not None and len(same) != scores.numel()):
        raise ValueError(f"{scores.numel()} predictions but {len(groups)} group keys")
    u, pairs = _grouped_mann_whitney(scores, labels, groups)
    if same is not None:
        u_same, pairs_same = _grouped_mann_whitney(scores, labels, same)
        u, pairs = u - u_same, pairs - pairs_same
    return u / pairs if pairs else None


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 10) -> float | None:
    """Σ_bins (bin size / n) · |mean predicted probability − observed frequency| over equal-width bins.

    `probs` must lie in [0, 1]; a probability of exactly 1 falls in the last bin. None when there are no
    samples.
    """
    probs, labels = _pair(probs, labels)
    if probs.numel() == 0:
        return None
    if ((probs < 0) | (probs > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    bins = (probs * n_bins).long().clamp(max=n_bins - 1)  # (n,) bin index
    gap_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, probs - labels.double())  # Σ (p − y)
    return (gap_sum.abs().sum() / probs.numel()).item()  # |Σ (p − y)| = bin size · |mean p − frequency|


def accuracy(probs: Any, labels: Any, threshold: float = 0.5) -> float | None:
    """Fraction of outcomes predicted right when predicting 1 for probabilities above `threshold`."""
    probs, labels = _pair(probs, labels)
    if probs.numel() == 0:
        return None
    return ((probs > threshold) == labels).double().mean().item()

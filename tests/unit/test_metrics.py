"""ROC-AUC (pooled, within groups) against a brute-force pair count, ECE on hand-made cases, None when undefined."""

import itertools

import pytest
import torch

from qsharp_ext.metrics import accuracy, expected_calibration_error, roc_auc, within_group_roc_auc


def pairwise_auc(scores: list[float], labels: list[int]) -> float:
    """Every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("n", [2, 7, 50, 301])
def test_roc_auc_matches_the_pairwise_count_with_ties(rng, n):
    for _ in range(5):
        scores = torch.randint(0, 6, (n,), generator=rng).double() / 5  # few distinct values: many ties
        labels = torch.randint(0, 2, (n,), generator=rng)
        labels[0], labels[-1] = 0, 1  # both classes present
        expected = pairwise_auc(scores.tolist(), labels.tolist())
        assert roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_on_continuous_scores_and_known_cases(rng):
    scores = torch.rand(200, generator=rng, dtype=torch.float64)
    labels = (torch.rand(200, generator=rng) < scores).long()
    assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores.tolist(), labels.tolist()), abs=1e-12)
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert roc_auc([True, False], [True, False]) == 1.0  # booleans are fine


def within_group_pairs_auc(scores, labels, groups, same) -> float | None:
    """Every (positive, negative) pair sharing a group but not a `same` key: 1 if the positive wins, 1/2 on a tie."""
    wins = pairs = 0.0
    for i, j in itertools.product(range(len(scores)), repeat=2):
        if labels[i] == 1 and labels[j] == 0 and groups[i] == groups[j] and same[i] != same[j]:
            wins += (scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j])
            pairs += 1
    return wins / pairs if pairs else None


@pytest.mark.parametrize("n", [3, 20, 120])
def test_within_group_roc_auc_matches_the_pairwise_count(rng, n):
    for _ in range(5):
        scores = (torch.randint(0, 5, (n,), generator=rng).double() / 4).tolist()  # ties within groups
        labels = torch.randint(0, 2, (n,), generator=rng).tolist()
        groups = [("prompt", g) for g in torch.randint(0, 4, (n,), generator=rng).tolist()]
        same = [(g, k) for g, k in zip(groups, torch.randint(0, 3, (n,), generator=rng).tolist(), strict=True)]
        expected = within_group_pairs_auc(scores, labels, groups, same)
        got = within_group_roc_auc(scores, labels, groups, same)
        assert (got is None and expected is None) or got == pytest.approx(expected, abs=1e-12)
        no_same = within_group_pairs_auc(scores, labels, groups, list(range(n)))
        got = within_group_roc_auc(scores, labels, groups)
        assert (got is None and no_same is None) or got == pytest.approx(no_same, abs=1e-12)


def test_within_group_roc_auc_ignores_what_separates_groups():
    # Group "easy" always scores high and succeeds more: pooled ROC-AUC rewards that, within groups it is chance.
    scores = [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
    labels = [1, 1, 1, 0, 1, 0, 0, 0]
    groups = ["easy"] * 4 + ["hard"] * 4
    assert roc_auc(scores, labels) == 0.75
    assert within_group_roc_auc(scores, labels, groups) == 0.5
    assert within_group_roc_auc([0.2, 0.8, 0.3, 0.7], [0, 1, 0, 1], ["a", "a", "b", "b"]) == 1.0
    assert within_group_roc_auc([0.2, 0.8], [0, 1], ["a", "a"], same=["x", "x"]) is None  # only a same-key pair
    assert within_group_roc_auc([0.2, 0.8], [1, 1], ["a", "a"]) is None
    with pytest.raises(ValueError, match="group keys"):
        within_group_roc_auc([0.2, 0.8], [0, 1], ["a"])
    with pytest.raises(ValueError, match="NaN"):
        within_group_roc_auc([float("nan"), 0.8], [0, 1], ["a", "a"])


def test_ece_on_hand_made_cases():
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0
    assert expected_calibration_error([1.0, 1.0], [0, 0]) == 1.0
    # one bin [0.2, 0.3): mean prediction 0.25, frequency 1/2 → 0.25
    assert expected_calibration_error([0.2, 0.3 - 1e-9], [1, 0]) == pytest.approx(0.25, abs=1e-8)
    # two bins: [0.1 (y=0), 0.1 (y=1)] → |0.1 − 0.5| = 0.4 on half the data; [0.9 (y=1)] ×2 → 0.1 on the other half
    probs, labels = [0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1]
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    # with one bin everything is pooled: |0.5 − 0.75|
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.25)


def test_accuracy():
    assert accuracy([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 0]) == 0.75
    assert accuracy([0.5], [0]) == 1.0  # exactly at the threshold predicts 0


def test_undefined_metrics_are_none_not_nan():
    assert roc_auc([0.1, 0.9, 0.5], [1, 1, 1]) is None  # one class only
    assert roc_auc([0.1, 0.9], [0, 0]) is None
    assert roc_auc([], []) is None
    assert expected_calibration_error([], []) is None
    assert accuracy([], []) is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="predictions but"):
        roc_auc([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        accuracy([0.1], [2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([float("nan"), 0.1], [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.5], [1])

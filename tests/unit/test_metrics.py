"""ROC-AUC against a brute-force pairwise count, ECE on hand-made cases, degenerate inputs give None."""

import pytest
import torch

from qsharp_ext.metrics import accuracy, expected_calibration_error, roc_auc


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

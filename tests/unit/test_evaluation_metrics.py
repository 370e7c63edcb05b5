"""Evaluation metrics from hand-made samples: pass@1 and its clustered SE, maj@n, pass@n, best-of-n."""

import math

import pytest
import torch

from qsharp_ext.evaluation import majority_reward, paired_gain, standard_error, summarize


def test_majority_reward_groups_equivalent_answers():
    answers = ["1/2", "0.5", "3", None, "3"]
    rewards = [1.0, 1.0, 0.0, 0.0, 0.0]
    as_number = {"1/2": 0.5, "0.5": 0.5, "3": 3.0}
    assert majority_reward(answers, rewards, lambda a, b: as_number[a] == as_number[b]) == 1.0
    assert majority_reward(answers, rewards, lambda a, b: a == b) == 0.0  # "3" wins without equivalence
    assert majority_reward([None, None], [1.0, 1.0], lambda a, b: a == b) == 0.0


def test_standard_error_is_over_prompts():
    per_prompt = torch.tensor([0.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    assert standard_error(per_prompt) == pytest.approx(per_prompt.std().item() / 2)
    assert standard_error(torch.tensor([0.3])) == 0.0


def test_summarize_rows():
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]  # 3 prompts × 2 samples
    samples = {
        "reward": rewards,
        "answer": ["a", "b", "c", "c", "d", "d"],
        "sequence": [[1, 2]] * 6,
        "kl": [0.5] * 6,
        "tok_s": 10.0,
    }
    row = summarize("qsharp", 0.1, samples, 2, lambda a, b: a == b, 1.0)
    assert row["pass@1"] == pytest.approx(0.5)
    assert row["pass@1_se"] == pytest.approx(torch.tensor([0.5, 0.0, 1.0]).std().item() / math.sqrt(3))
    assert row["pass@n"] == pytest.approx(2 / 3)
    assert row["maj@n"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)  # tie in prompt 1: the first group wins
    assert (
        row["kl"] == 0.5
        and row["bon_value"] is None
        and row["bon_gain"] is None
        and row["n_prompts"] == 3
        and row["n_samples"] == 2
    )


def test_paired_gain_against_a_float64_reference():
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    difficulty = torch.rand(300, generator=gen, dtype=torch.float64)  # prompts of every difficulty
    ref = (difficulty + 0.05 * torch.randn(300, generator=gen, dtype=torch.float64)).clamp(0, 1)
    guided = (ref + 0.03 + 0.02 * torch.randn(300, generator=gen, dtype=torch.float64)).clamp(0, 1)
    gain, se = paired_gain(guided, ref)
    diff = [g - r for g, r in zip(guided.tolist(), ref.tolist(), strict=True)]
    mean = sum(diff) / len(diff)
    want_se = math.sqrt(sum((d - mean) ** 2 for d in diff) / (len(diff) - 1) / len(diff))
    assert gain == pytest.approx(mean, abs=1e-12) and se == pytest.approx(want_se, rel=1e-9)
    assert se < 0.25 * math.hypot(standard_error(guided), standard_error(ref))  # difficulty cancels in pairs


def test_value_auc_ranks_the_samples_of_each_prompt_only():
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # 3 prompts × 3 samples
    values = [0.9, 0.1, 0.95, 0.6, 0.8, 0.5, 0.99, 0.98, 0.97]  # prompt 3: hard, yet scored highest
    samples = {"reward": rewards, "answer": ["1"] * 9, "sequence": [[1]] * 9, "kl": [0.0] * 9, "tok_s": 1.0}
    row = summarize("qsharp", 0.1, samples | {"value": values}, 3, lambda a, b: a == b, 1.0)
    wins = pairs = 0
    for p in range(3):  # brute force over the right–wrong pairs within each prompt
        for i in range(3 * p, 3 * p + 3):
            for j in range(3 * p, 3 * p + 3):
                if rewards[i] == 1.0 and rewards[j] == 0.0:
                    pairs += 1
                    wins += values[i] > values[j]
    assert row["value_auc"] == pytest.approx(wins / pairs) and wins / pairs == 0.75
    assert row["bon_value"] == pytest.approx((0.0 + 1.0 + 0.0) / 3)
    picks, randoms = [0.0, 1.0, 0.0], [1 / 3, 2 / 3, 0.0]  # the pick's reward and a random sample's, per prompt
    diffs = [p - r for p, r in zip(picks, randoms)]
    mean = sum(diffs) / 3
    assert row["bon_gain"] == pytest.approx(mean)
    assert row["bon_gain_se"] == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3))
    assert summarize("pi_ref", None, samples, 3, lambda a, b: a == b, 1.0)["value_auc"] is None

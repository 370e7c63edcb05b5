"""Reward functions: answer extraction, math-verify equivalence, the support check."""

import threading

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.rewards import (
    check_reward,
    exact_match,
    extract_math_answer,
    math_equal,
    math_reward,
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{3} no, \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a}{b}}} and 7", "\\sqrt{\\frac{a}{b}}"),
        ("\\boxed{4} then \\boxed{5", "4"),  # the last one is unclosed
        ("She pays 3 + 4 = 7.\n#### 7\nextra 9", "7"),
        ("totals 12 then 1,234.5 apples", "1234.5"),
        ("it is -3 degrees", "-3"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_math_answer(text, answer):
    assert extract_math_answer(text) == answer


@pytest.mark.parametrize(
    ("pred", "gold"),
    [("0.5", "1/2"), ("\\frac{1}{2}", "0.5"), ("1/2", "\\frac{1}{2}"), ("72.0", "72"), ("1,000", "1000")],
)
def test_math_equal_equivalent_forms(pred, gold):
    assert math_equal(pred, gold)


@pytest.mark.parametrize(("pred", "gold"), [("3", "4"), (None, "4"), ("", "4"), ("0.5", None)])
def test_math_equal_rejects(pred, gold):
    assert not math_equal(pred, gold)


def test_math_equal_off_the_main_thread():
    """math-verify's alarm-based time limit only works on the main thread: other threads run without it."""
    results = []
    thread = threading.Thread(target=lambda: results.append(math_equal("0.5", "\\frac{1}{2}")))
    thread.start()
    thread.join()
    assert results == [True]


def test_math_reward():
    assert math_reward("so the answer is \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    assert math_reward("#### 18", "18") == 1.0
    assert math_reward("I think it is 17", "18") == 0.0
    assert math_reward("no idea", "18") == 0.0


def test_exact_match():
    assert exact_match(" w3 ", "w3") == 1.0
    assert exact_match("w3", "w4") == 0.0
    assert exact_match(None, "w4") == 0.0


def test_check_reward():
    assert check_reward(1, 0.0, 1.0) == 1.0
    assert check_reward(-2.5, -5.0, 5.0) == -2.5
    for bad in (1.5, -0.1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="outside the task's support"):
            check_reward(bad, 0.0, 1.0)
    with pytest.raises(UserError, match=r"1\.5"):
        check_reward(1.5, 0.0, 1.0)
    with pytest.raises(UserError, match="must be a number"):
        check_reward("high", 0.0, 1.0)

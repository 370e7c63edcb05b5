"""Reward functions: exact match, math answers (extraction + math-verify equivalence), the support check.

Pure functions of strings; every reward lies in a task's support [v_min, v_max], which `check_reward`
enforces so that a value model never trains on a target outside its atoms. It knows nothing of tasks,
models or sampling; which reward a task uses is decided in tasks/.
"""

from __future__ import annotations

import math
import re
import threading

from qsharp_ext.errors import UserError

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def exact_match(pred: str | None, gold: str | None) -> float:
    """1.0 when both are given and equal up to surrounding whitespace, else 0.0."""
    if pred is None or gold is None:
        return 0.0
    return float(pred.strip() == gold.strip())


def _last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}`, braces matched (so `\\boxed{\\frac{1}{2}}` works)."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, begin = 0, start + len("\\boxed{")
        for i in range(begin, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                if depth == 0:
                    return text[begin:i].strip()
                depth -= 1
        start = text.rfind("\\boxed{", 0, start)  # unclosed: try the one before
    return None


def _after_hashes(text: str) -> str | None:
    """GSM8K style: the first line after the last `####`."""
    if "####" not in text:
        return None
    lines = text.rsplit("####", 1)[1].strip().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def extract_math_answer(text: str) -> str | None:
    """The final answer of a solution: the last `\\boxed{...}`, else the text after `####`, else the last number."""
    for extract in (_last_boxed, _after_hashes, _last_number):
        answer = extract(text)
        if answer:
            return answer
    return None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _parse(answer: str, timeout: int | None) -> list:
    """math-verify's parse of a bare answer: as LaTeX math first (`x+1`, `\\frac12`), then as plain text."""
    from math_verify import parse

    return parse(f"${answer}$", parsing_timeout=timeout) or parse(answer, parsing_timeout=timeout)


def math_equal(pred: str | None, gold: str | None) -> bool:
    """Whether two final answers are the same number or expression ("1/2" = "0.5" = "\\frac{1}{2}").

    math-verify bounds its work with signal.alarm, which only the main thread may use; on other threads
    it runs without a time limit.
    """
    if pred is None or gold is None or not pred.strip() or not gold.strip():
        return False
    if pred.strip() == gold.strip():
        return True
    from math_verify import verify

    timeout = 5 if _on_main_thread() else None
    gold_parsed, pred_parsed = _parse(gold, timeout), _parse(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def math_reward(completion: str, gold: str | None) -> float:
    """1.0 when the completion's final answer equals `gold` mathematically, else 0.0 (no answer: 0.0)."""
    return float(math_equal(extract_math_answer(completion), gold))


def check_reward(value: float, v_min: float, v_max: float) -> float:
    """`value` as a float, refused (one clear sentence) when it is not a number in [v_min, v_max]."""
    try:
        reward = float(value)
    except (TypeError, ValueError):
        raise UserError(f"a reward must be a number, got {value!r}") from None
    if math.isnan(reward) or not v_min <= reward <= v_max:
        raise UserError(f"reward {value!r} is outside the task's support [{v_min}, {v_max}]")
    return reward

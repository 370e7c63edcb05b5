"""What every task provides: problems (deterministic train / eval splits), a bounded reward, the answer.

A task is a plain class. Subclasses give the splits, `score` (the raw reward of a completion) and
`answer_of`; `reward` checks that the score lies in the value model's support [v_min, v_max]. A task
knows nothing of models or sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qsharp_ext.rewards import check_reward


@dataclasses.dataclass
class Problem:
    """One prompt; `id` is unique within its task and stable across runs (roll-out seeds derive from it)."""

    id: str
    prompt: str
    answer: str | None  # the reference answer when the task has one


class Task:
    """Base class of tasks: override the splits, `score` and `answer_of` (and `settings` if it has options)."""

    name: str = "task"
    v_min: float = 0.0
    v_max: float = 1.0

    def train_problems(self) -> list[Problem]:
        raise NotImplementedError

    def eval_problems(self) -> list[Problem]:
        raise NotImplementedError

    def score(self, problem: Problem, completion: str) -> float:
        """The raw reward of `completion`; `reward` checks it."""
        raise NotImplementedError

    def answer_of(self, completion: str) -> str | None:
        """The completion's final answer (majority votes compare these); None when it gives none."""
        raise NotImplementedError

    def answers_equal(self, a: str, b: str) -> bool:
        """Whether two extracted answers count as the same vote (math tasks compare them mathematically)."""
        return a == b

    def reward(self, problem: Problem, completion: str) -> float:
        """The final reward of `completion`, refused with a clear error when outside [v_min, v_max]."""
        return check_reward(self.score(problem, completion), self.v_min, self.v_max)

    def future_targets(self, prompt_ids: list[int], completion_ids: list[int], k: int) -> list[list[int]] | None:
        """Optional hook for value-model training's future-token objective (`future_targets="task"`).

        Per token of prompt + completion, the k token ids its hidden state should learn to name (−100: none),
        computed from the prompt's content alone, never from a reward. None (the default): the task has no
        such targets, and the objective reads the roll-out's own next tokens instead.
        """
        return None

    def settings(self) -> dict[str, Any]:
        """The options that make this task what it is (recorded beside roll-out data); JSON values."""
        return {}

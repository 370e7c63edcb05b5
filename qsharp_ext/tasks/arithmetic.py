"""Two-operand integer arithmetic as a few-shot completion prompt: a small real LM gets some right.

Every problem is `x op y` with both operands in [low, high] and `op` one of `+`, `-`, `*`. The prompt is
a fixed list of solved examples followed by the question, one `Q:` / `A:` pair per example:

    Q: 7 + 2
    A: 9
    ...
    Q: 8 - 3
    A:

The shots are drawn once from the problem space (from the seed, one per operator in turn) and every prompt
uses the same ones; the remaining distinct problems are shuffled and split into train and eval, so no
question is in both splits or among the shots. With `nonnegative` (the default) a subtraction puts the
larger operand first.

`n_train_wide` adds that many training problems with operands up to `train_high` (questions of the wider
range that are not shots, eval or train problems already, shuffled by the seed). The shots, the eval
problems and the first `n_train` train problems stay exactly those without it, so a value model can be
given far more distinct problems to learn the arithmetic from and still be judged on the same eval set.

Stop rule: decoding ends only at EOS or the token limit, and a model that learned the pattern goes on with
`\\nQ: ...` after its answer. So the answer is the first number on the completion's first line (the text
before the first newline) and nothing after it counts; a first line without a number has no answer. The
reward is 1.0 when that number is the exact integer result ("7.0" and "07" are not "7"), else 0.0.
Commas in numbers are not understood (operands are small). The task knows nothing of tokenizers.
"""

from __future__ import annotations

import itertools
import operator
import random
import re
from typing import Any

from qsharp_ext.errors import UserError
from qsharp_ext.tasks.base import Problem, Task

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

Question = tuple[int, str, int]  # (x, op, y)


def question_text(question: Question) -> str:
    x, op, y = question
    return f"{x} {op} {y}"


def solve(question: Question) -> int:
    x, op, y = question
    return OPERATORS[op](x, y)


def first_line_number(completion: str) -> str | None:
    """The first number (optional minus sign and decimals) on the completion's first line, as written."""
    match = _FIRST_NUMBER.search(completion.split("\n", 1)[0])
    return match.group() if match else None


class ArithmeticTask(Task):
    """Reward 1.0 when the first number of the completion's first line is the exact result."""

    name = "arithmetic"

    def __init__(
        self,
        low: int = 1,
        high: int = 9,
        ops: tuple[str, ...] = ("+", "-"),
        n_train: int = 48,
        n_eval: int = 64,
        n_shots: int = 4,
        nonnegative: bool = True,
        seed: int = 0,
        n_train_wide: int = 0,
        train_high: int | None = None,
    ) -> None:
        ops = tuple(ops)
        if not ops or any(op not in OPERATORS for op in ops) or len(set(ops)) != len(ops):
            raise UserError(f"ops must be distinct operators among {', '.join(OPERATORS)}, got {list(ops)}")
        if low > high or n_train < 0 or n_eval < 0 or n_shots < 0:
            raise UserError("arithmetic needs low <= high and n_train, n_eval, n_shots >= 0")
        train_high = high if train_high is None else train_high
        if train_high < high or n_train_wide < 0:
            raise UserError(f"arithmetic needs train_high ({train_high}) >= high ({high}) and n_train_wide >= 0")
        self.low, self.high, self.ops, self.nonnegative = low, high, ops, nonnegative
        self.n_train, self.n_eval, self.n_shots, self.seed = n_train, n_eval, n_shots, seed
        self.n_train_wide, self.train_high = n_train_wide, train_high
        questions = self._all_questions(high)
        if n_shots + n_train + n_eval > len(questions):
            raise UserError(
                f"only {len(questions)} distinct problems exist for operands {low}..{high} and ops {list(ops)}; "
                f"ask for fewer than {n_shots} shots + {n_train} train + {n_eval} eval, or widen the range"
            )
        rng = random.Random(seed)
        rng.shuffle(questions)
        self.shots = self._pick_shots(questions)
        rest = [q for q in questions if q not in self.shots]
        train = rest[:n_train] + self._wide_questions(taken=set(self.shots) | set(rest[: n_train + n_eval]))
        self._train = [self._problem(f"train-{i}", q) for i, q in enumerate(train)]
        self._eval = [self._problem(f"eval-{i}", q) for i, q in enumerate(rest[n_train : n_train + n_eval])]

    def _wide_questions(self, taken: set[Question]) -> list[Question]:
        """`n_train_wide` questions with operands up to `train_high`, none of them in `taken`."""
        if not self.n_train_wide:
            return []
        pool = [q for q in self._all_questions(self.train_high) if q not in taken]
        if self.n_train_wide > len(pool):
            raise UserError(
                f"only {len(pool)} more problems exist for operands {self.low}..{self.train_high}; "
                f"ask for at most that many (n_train_wide={self.n_train_wide}) or raise train_high"
            )
        random.Random(self.seed + 1).shuffle(pool)
        return pool[: self.n_train_wide]

    def _all_questions(self, high: int) -> list[Question]:
        """Every distinct question with operands in [low, high], in a fixed order (the seed shuffles it)."""
        operands = range(self.low, high + 1)
        questions = []
        for op, x, y in itertools.product(self.ops, operands, operands):
            if op == "-" and self.nonnegative and x < y:
                continue
            questions.append((x, op, y))
        return questions

    def _pick_shots(self, shuffled: list[Question]) -> list[Question]:
        """One question of each operator in turn, each with a result not shown yet when one is left."""
        shots: list[Question] = []
        for op in itertools.islice(itertools.cycle(self.ops), self.n_shots):
            unused = [q for q in shuffled if q not in shots]
            shown = {solve(q) for q in shots}
            fresh = [q for q in unused if q[1] == op and solve(q) not in shown]
            shots.append(fresh[0] if fresh else unused[0])
        return shots

    def few_shot_prefix(self) -> str:
        return "".join(f"Q: {question_text(q)}\nA: {solve(q)}\n" for q in self.shots)

    def _problem(self, problem_id: str, question: Question) -> Problem:
        prompt = f"{self.few_shot_prefix()}Q: {question_text(question)}\nA:"
        return Problem(problem_id, prompt, str(solve(question)))

    def train_problems(self) -> list[Problem]:
        return list(self._train)

    def eval_problems(self) -> list[Problem]:
        return list(self._eval)

    def answer_of(self, completion: str) -> str | None:
        return first_line_number(completion)

    def score(self, problem: Problem, completion: str) -> float:
        return float(self.answer_of(completion) == problem.answer)

    def settings(self) -> dict[str, Any]:
        settings = {
            "low": self.low, "high": self.high, "ops": list(self.ops), "n_train": self.n_train,
            "n_eval": self.n_eval, "n_shots": self.n_shots, "nonnegative": self.nonnegative, "seed": self.seed,
        }  # fmt: skip
        if self.n_train_wide:  # only then, so data collected before the option existed still matches
            settings |= {"n_train_wide": self.n_train_wide, "train_high": self.train_high}
        return settings

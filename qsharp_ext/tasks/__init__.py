"""Tasks by name: `make_task("first_token", n_train=64)`, or `build_task(name, ("n_train=64",))` from the
command line's `--task-options`.

A plain dict of task classes; options go to the class's constructor and unknown ones are refused clearly.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence

from qsharp_ext.config import parse_key_values, typed_value
from qsharp_ext.errors import UserError
from qsharp_ext.tasks.arithmetic import ArithmeticTask
from qsharp_ext.tasks.base import Problem, Task
from qsharp_ext.tasks.first_token import FirstTokenTask
from qsharp_ext.tasks.gsm8k import GSM8KTask
from qsharp_ext.tasks.stargraph import StarGraphTask

TASKS: dict[str, type[Task]] = {
    "first_token": FirstTokenTask,
    "arithmetic": ArithmeticTask,
    "gsm8k": GSM8KTask,
    "stargraph": StarGraphTask,
}

__all__ = [
    "TASKS",
    "ArithmeticTask",
    "FirstTokenTask",
    "GSM8KTask",
    "Problem",
    "StarGraphTask",
    "Task",
    "build_task",
    "make_task",
]


def make_task(name: str, **options) -> Task:
    """The task called `name`, built with `options`."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    task_cls = TASKS[name]
    accepted = set(inspect.signature(task_cls).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(
            f"task {name} has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(accepted))}"
        )
    hints = typing.get_type_hints(task_cls.__init__)
    typed = {key: typed_value(f"task {name}'s option {key}", hints[key], v) if key in hints else v
             for key, v in options.items()}  # fmt: skip
    return task_cls(**typed)


def build_task(name: str, task_options: Sequence[str] = ()) -> Task:
    """The task called `name`, built with its options given as KEY=VALUE (a config's `task_options`)."""
    return make_task(name, **parse_key_values(task_options, "task option"))

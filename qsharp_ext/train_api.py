"""`train_value_model`: a value model from π_ref in memory, prompts and a reward function, in one call.

It runs the command line's stages on objects in memory, so a Python user gets the same data, model and
resumability: round k collects roll-outs (`run_collect`: π_ref, guided by round k-1's value model from round
2 on, completes every prompt `samples_per_prompt` times and `reward_fn` scores each completion), then trains
(`run_train`, from round k-1's model) on the data of rounds 1..k. With `out=` the run folder is laid out as
the pipeline's (round-K/data/, round-K/qsharp/) and a second call with the same arguments resumes an
interrupted run or returns the finished model; without `out=` a temporary folder is used and removed.

It knows how prompts (strings, chat messages, a `datasets.Dataset` column) and a function become a Task,
and how the stages' configs are filled in; it knows nothing of the numerics or of the files' format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext import rollouts, train_report, training
from qsharp_ext.errors import UserError
from qsharp_ext.hub import model_fingerprint
from qsharp_ext.io import check_output_folder
from qsharp_ext.prompts import prompt_texts, prompt_token_ids
from qsharp_ext.rewards import check_reward
from qsharp_ext.rollouts import CollectConfig, run_collect
from qsharp_ext.tasks.base import Problem, Task
from qsharp_ext.training import TrainConfig, run_train
from qsharp_ext.value_model import ValueModel, check_reference_tokenizer

RewardFunction = Callable[[Any, str], float]  # (the prompt as given, the completion's text) → reward
# TrainConfig fields that train_value_model fills in itself, and why.
SET_HERE = {
    "out": "pass out= (a folder) or leave it out (a temporary folder)",
    "data": "the roll-outs are collected from the prompts",
    "ref_model": "π_ref is the model passed in",
    "init_value_model": "round k starts from round k-1's model",
    "seed": "pass seed=, which seeds both the roll-outs and the training",
    "device": "the value model trains on π_ref's device",
    "dtype": "π_ref's layers are copied in its own dtype (bf16=True trains under bfloat16 autocast)",
}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class RewardFunctionTask(Task):
    """The prompts as training problems and `reward_fn(prompt, completion)` as the reward: a Task without a subclass."""

    name = "reward_fn"

    def __init__(self, prompts: list[Any], texts: list[str], reward_fn: RewardFunction, v_min: float, v_max: float):
        self.prompts, self.reward_fn, self.v_min, self.v_max = prompts, reward_fn, v_min, v_max
        self.problems = [Problem(f"prompt-{i}", text, None) for i, text in enumerate(texts)]

    def train_problems(self) -> list[Problem]:
        return list(self.problems)

    def eval_problems(self) -> list[Problem]:
        return []

    def score(self, problem: Problem, completion: str) -> float:
        return self.reward_fn(self.prompts[int(problem.id.removeprefix("prompt-"))], completion)

    def answer_of(self, completion: str) -> str | None:
        return None

    def reward(self, problem: Problem, completion: str) -> float:
        value = self.score(problem, completion)
        try:
            return check_reward(value, self.v_min, self.v_max)
        except UserError:
            raise UserError(
                f"reward_fn returned {value!r} for prompt {problem.prompt[:40]!r} ({problem.id}) and completion "
                f"{completion[:40]!r}, which is not a number in the value head's support "
                f"[{self.v_min}, {self.v_max}] (a bernoulli head models rewards in [0, 1]; for other rewards pass "
                "kind='histogram' or 'mean' with v_min and v_max)"
            ) from None

    def settings(self) -> dict[str, Any]:
        return {"reward_fn": getattr(self.reward_fn, "__qualname__", type(self.reward_fn).__name__)}


def takes_two_arguments(fn: Callable[..., Any]) -> bool:
    """Whether `fn(prompt, completion)` binds (a callable whose signature cannot be read is given the benefit)."""
    try:
        inspect.signature(fn).bind("prompt", "completion")
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins)
        return True
    return True


def prompt_task(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Any,
    reward_fn: RewardFunction | None,
    prompt_column: str,
    v_min: float,
    v_max: float,
) -> Task:
    """The Task that `prompts` and `reward_fn` make: a Task as it is, or prompts (a Dataset's column) scored by
    the function."""
    if isinstance(prompts, Task):
        if reward_fn is not None:
            raise UserError("give either a Task (it has its own reward) or prompts with a reward_fn, not both")
        if not prompts.train_problems():
            raise UserError(f"task {prompts.name} has no training prompts")
        return prompts
    if reward_fn is None or not callable(reward_fn):
        raise UserError("reward_fn must be a function reward_fn(prompt, completion) -> float")
    if not takes_two_arguments(reward_fn):
        raise UserError("reward_fn must take two arguments, reward_fn(prompt, completion) -> float")
    if hasattr(prompts, "column_names") and not isinstance(prompts, dict):  # a datasets.Dataset
        if prompt_column not in prompts.column_names:
            columns = ", ".join(prompts.column_names)
            raise UserError(f"the dataset has no column {prompt_column!r} (its columns: {columns}); set prompt_column")
        prompts = list(prompts[prompt_column])
    items = [prompts] if isinstance(prompts, str) else list(prompts) if isinstance(prompts, list | tuple) else None
    if items is None:
        raise UserError(f"prompts must be strings, chat messages, a datasets.Dataset or a Task, not {type(prompts)}")
    texts = prompt_texts(tokenizer, items)
    prompt_token_ids(tokenizer, texts)  # refuses text the tokenizer would turn into padding, before any work
    if len(texts) != len(items):  # one conversation given as a bare list of messages
        items = [items]
    return RewardFunctionTask(items, texts, reward_fn, v_min, v_max)


@dataclasses.dataclass(frozen=True)
class Stages:
    """The configs of one call's stages, round by round (`folder` is the run folder)."""

    folder: Path
    reference: str  # π_ref's name and weights fingerprint, recorded with the data and the model
    device: str
    dtype: str
    seed: int
    collect: dict[str, Any]
    train: dict[str, Any]

    def model(self, k: int) -> Path:
        return self.folder / f"round-{k}" / "qsharp" / "model"

    def collect_config(self, k: int) -> CollectConfig:
        cfg = CollectConfig(
            out=self.folder / f"round-{k}" / "data", ref_model=self.reference, round=k,
            value_model=str(self.model(k - 1)) if k > 1 else None, seed=self.seed, device=self.device,
            dtype=self.dtype, **self.collect,
        )  # fmt: skip
        rollouts.check_config(cfg)
        return cfg

    def train_config(self, k: int) -> TrainConfig:
        cfg = TrainConfig(
            out=self.folder / f"round-{k}" / "qsharp",
            data=tuple(self.folder / f"round-{j}" / "data" for j in range(1, k + 1)),
            ref_model=self.reference,
            init_value_model=str(self.model(k - 1)) if k > 1 else None,
            seed=self.seed + k - 1,
            device=self.device,
            **self.train,
        )
        training.check_config(cfg)
        return cfg


def check_train_options(options: dict[str, Any]) -> None:
    """Only TrainConfig's fields, and none of those that train_value_model fills in itself."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        allowed = ", ".join(sorted(known - set(SET_HERE)))
        raise UserError(f"unknown training setting(s) {', '.join(unknown)}; train_value_model takes: {allowed}")
    clash = sorted(set(options) & set(SET_HERE))
    if clash:
        raise UserError(f"{clash[0]} is not a setting of train_value_model: {SET_HERE[clash[0]]}")


def check_reference(ref_model: Any, tokenizer: Any) -> None:
    if not (isinstance(ref_model, torch.nn.Module) and hasattr(ref_model, "config")):
        raise UserError(f"ref_model must be a transformers causal LM (a PreTrainedModel), not {type(ref_model)}")
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise UserError(f"tokenizer must be π_ref's transformers tokenizer, not {type(tokenizer)}")
    check_reference_tokenizer(ref_model, tokenizer)


@contextlib.contextmanager
def run_folder(out: str | Path | None) -> Iterator[Path]:
    """`out` (checked by `check_output_folder` beforehand), or a temporary folder removed afterwards."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="qsharp-ext-train-") as tmp:
        yield Path(tmp)


def train_value_model(
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Any,
    reward_fn: RewardFunction | None = None,
    *,
    out: str | Path | None = None,
    prompt_column: str = "prompt",
    rounds: int = 1,
    samples_per_prompt: int = 16,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 20,
    eta: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    **train_options: Any,
) -> ValueModel:
    """Collect roll-outs of π_ref (`ref_model`) on `prompts`, score them with `reward_fn`, train a value model.

    `prompts`: a list of strings, chat conversations (lists of {"role", "content"} dicts, rendered with the
    tokenizer's chat template and generation prompt), a `datasets.Dataset` (its `prompt_column` holds either),
    or a Task (its training problems and its reward; then no `reward_fn`). `reward_fn(prompt, completion) ->
    float` gets each prompt as given and a completion's text; its rewards must lie in the head's support
    ([0, 1] for the default bernoulli head; `kind="histogram"` or `"mean"` with `v_min`, `v_max` for others).
    A reward that needs a reference answer can look it up by prompt (a dict built from the dataset).

    Roll-outs (the defaults are `qsharp-ext collect`'s): `samples_per_prompt` completions of at most
    `max_new_tokens` tokens per prompt, sampled at `temperature` / `top_p`; from round 2 on, π_ref is guided
    by the previous round's model at `eta`, which scores `top_k` candidates per step. `seed` fixes the
    roll-outs' noise and the training's data order (the same call trains the same model).
    `train_options` are TrainConfig's fields (`steps`, `lr`, `num_layers`, `batch_size`, `kind`, ... see
    `qsharp-ext train --help`; its defaults are a small first try: set steps and lr for your task).
    Everything is checked before anything runs; the value model trains on π_ref's device. `out`: the run
    folder (resumable); None: a temporary one. Returns the trained ValueModel on π_ref's device and in its
    dtype; `training_info` says how it was trained, with the held-out metrics under "metrics".
    """
    check_reference(ref_model, tokenizer)
    check_train_options(train_options)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UserError(f"rounds must be an integer of at least 1, got {rounds!r}")
    if out is not None and not isinstance(out, str | os.PathLike):
        raise UserError(f"out must be a folder (a str or a Path), not {out!r}")
    if out is not None:
        check_output_folder(out)
    device, dtype = next(ref_model.parameters()).device, next(ref_model.parameters()).dtype
    name = getattr(ref_model, "name_or_path", "") or type(ref_model).__name__
    collect = dict(samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                   top_p=top_p, top_k=top_k, eta=eta)  # fmt: skip
    root = Path(out) if out is not None else Path(tempfile.gettempdir())  # where run_folder will put it
    stages = Stages(root, f"{name} (weights {model_fingerprint(ref_model)})", str(device),
                    DTYPE_NAMES.get(dtype, "float32"), seed, collect, train_options)  # fmt: skip
    first = stages.train_config(1)  # every setting checked here, before any work
    stages.collect_config(1)
    task = prompt_task(tokenizer, prompts, reward_fn, prompt_column, first.v_min, first.v_max)
    training.task_future_targets(first, task)  # future_targets="task" needs a task with the hook
    reference = (ref_model, tokenizer)
    with run_folder(out) as folder:
        stages = dataclasses.replace(stages, folder=folder)
        for k in range(1, rounds + 1):
            data = run_collect(
                stages.collect_config(k), task=task, progress=progress, reference=reference, run_folder=folder
            )
            metrics = run_train(stages.train_config(k), progress=progress, task=task, reference=reference)
            if progress:
                where = {} if out is not None else {"model": "memory"}
                print(f"round {k}/{rounds}: {rollouts.summary_line(data)}")
                print(f"round {k}/{rounds}: {train_report.summary_line(metrics | where)}")
        model = ValueModel.from_pretrained(stages.model(rounds), tokenizer=tokenizer, dtype=dtype, ref_model=ref_model)
    return model.to(device)

"""A local 2-CPU Ray instance, a tiny π_ref and a value model, shared by the scale-out tests."""

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from qsharp_ext.evaluation import EvaluateConfig
from qsharp_ext.tasks import FirstTokenTask, Problem
from qsharp_ext.tasks.first_token import make_tiny_reference
from qsharp_ext.value_model import ValueModel


class CrashingTask(FirstTokenTask):
    """The first-token task, except that scoring `crash_prompt` kills the process while `kills` holds a count > 0.

    The count lives in a file so that every Ray worker (and each restart of one) shares it. With
    `crash_after` (a folder), the kill waits until a finished unit is saved there, so that a test of what
    a crash keeps does not depend on which worker Ray schedules first.
    """

    def __init__(self, kills: Path, crash_prompt: str, crash_after: Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kills, self.crash_prompt, self.crash_after = kills, crash_prompt, crash_after

    def reward(self, problem: Problem, text: str) -> float:
        left = int(self.kills.read_text()) if self.kills.is_file() else 0
        if problem.id == self.crash_prompt and left > 0:
            wait_for_a_finished_unit(self.crash_after)
            self.kills.write_text(str(left - 1))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().reward(problem, text)


def saved_units(folder: Path) -> list[str]:
    """File names of the finished units an evaluation saved in `folder` (every .json but settings.json)."""
    return [p.name for p in folder.glob("*.json") if p.name != "settings.json"]


def wait_for_a_finished_unit(folder: Path | None, timeout: float = 120.0) -> None:
    """Return once `folder` holds a saved unit, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while folder is not None and time.monotonic() < deadline:
        if saved_units(folder):
            return
        time.sleep(0.05)


@pytest.fixture(scope="session")
def ray_local():
    """`ray.init(num_cpus=2)` once for the session; the backend reuses an initialized Ray."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_task() -> FirstTokenTask:
    return FirstTokenTask(n_train=8, n_eval=4, seed=1)


@pytest.fixture(scope="session")
def model_dirs(small_task, tmp_path_factory) -> tuple[Path, Path]:
    """(π_ref folder, value model folder): a tiny random Llama and a 1-layer value model whose head discriminates."""
    ref_dir, value_dir = tmp_path_factory.mktemp("ref"), tmp_path_factory.mktemp("value")
    tokenizer = small_task.tokenizer()
    reference = make_tiny_reference(small_task, seed=0)
    value = ValueModel.from_reference(reference, num_layers=1, tokenizer=tokenizer)
    with torch.no_grad():  # a fresh head predicts about 0.5 everywhere; a spread one makes guidance act
        value.head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    reference.save_pretrained(ref_dir)
    tokenizer.save_pretrained(ref_dir)
    value.save_pretrained(value_dir, tokenizer)
    return ref_dir, value_dir


def evaluate_config(out: Path, model_dirs: tuple[Path, Path], **changes) -> EvaluateConfig:
    """A small local evaluation of the fixtures' π_ref and Q♯ model: 2 batches of 2 prompts, 3 samples each."""
    base = EvaluateConfig(
        out=out, ref_model=str(model_dirs[0]), qsharp_model=str(model_dirs[1]), etas=(None, 0.3), num_samples=3,
        prompts_per_batch=2, max_new_tokens=4, top_k=5, seed=2, device="cpu",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)

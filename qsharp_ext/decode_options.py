"""What collect, evaluate and pipeline share: the task's name and options and how π_ref (guided or not) is
decoded.

`SamplingOptions` (top-k, temperature, top-p, seed, device, dtype) is also `generate`'s base;
`DecodeOptions` adds the task and the completion length. The task is only named here: the stages build it
(`qsharp_ext.tasks.build_task`), so decoding settings never import the tasks.

A keyword-only base dataclass, like `scale.options.ScaleOptions`: each command's own required fields keep
their places, config.py's YAML / flag machinery sees plain fields, and the pipeline hands its decoding
settings to every stage with `decode_fields(cfg)` instead of copying them one by one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from qsharp_ext.config import base_fields
from qsharp_ext.errors import UserError
from qsharp_ext.loading import DtypeName, resolve_dtype
from qsharp_ext.sampling_settings import Sampling

TaskName = Literal["first_token", "arithmetic", "gsm8k", "stargraph"]
"""The keys of `qsharp_ext.tasks.TASKS` (tests/unit/test_config_types.py checks it): `--help` lists them."""


@dataclasses.dataclass(kw_only=True)
class SamplingOptions:
    """How π_ref (guided or not) samples, on what: shared with `generate`, which has no task."""

    top_k: int = 20
    """Candidates the value model scores at each guided step: π_ref's top_k most likely tokens. Not a
    truncation as in `model.generate`: the other tokens keep π_ref's probability (times the smallest offset)
    and can still be drawn. 20 is the paper's choice; the vocabulary size scores every token."""
    temperature: float = 1.0
    """π_ref's sampling temperature (the same for every method)."""
    top_p: float = 1.0
    """Nucleus mass kept among the candidates (1: off)."""
    seed: int = 0
    """Seed of the sampling noise (with a sample's identity it fixes every sample's noise): the same seed draws
    the same samples in every run (repeatable runs, paired comparisons); change it for fresh samples."""
    device: str = "auto"
    """auto (the GPU when there is one), cpu, cuda or cuda:N."""
    dtype: DtypeName = "auto"
    """Weights of π_ref and the value models: auto (bfloat16 on a GPU that has it, else float32), float32,
    bfloat16 or float16."""


@dataclasses.dataclass(kw_only=True)
class DecodeOptions(SamplingOptions):
    """The task, and decoding for it."""

    task: TaskName = "first_token"
    """Task: its prompts, reward and answer extraction."""
    task_options: tuple[str, ...] = ()
    """Options of the task's constructor as KEY=VALUE (VALUE read as JSON when it parses, else as text), e.g.
    `--task-options high=20 n_eval=300 'ops=["+", "-"]'`; in YAML, a mapping (`task_options: {high: 20}`)."""
    max_new_tokens: int = 32
    """Longest completion, in tokens (collect draws each roll-out's switch step h in [0, max_new_tokens - 1])."""


def check_sampling_options(opts: SamplingOptions, max_new_tokens: int) -> None:
    """One clear sentence for sampling settings that cannot work, before any model loads."""
    if opts.top_k < 1:
        raise UserError(f"top_k must be at least 1, got {opts.top_k}")
    Sampling(temperature=opts.temperature, top_p=opts.top_p, max_new_tokens=max_new_tokens)  # checks them
    resolve_dtype(opts.dtype, opts.device)


def decode_fields(opts: DecodeOptions) -> dict[str, Any]:
    """The shared fields of `opts` as keyword arguments for another command's config."""
    return base_fields(opts, DecodeOptions)

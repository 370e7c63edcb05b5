"""Where a stage runs: the fields `collect` and `evaluate` share for Ray workers and vLLM sampling.

A keyword-only base dataclass, so that the commands' own required fields keep their places and the YAML /
flag machinery of config.py sees plain fields (`--backend ray --ray-address auto --num-workers 8`).
These fields never change what is computed, except `vllm`, which draws π_ref's samples from another
random stream (collect records it with the data).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from qsharp_ext.config import base_fields
from qsharp_ext.errors import UserError


@dataclasses.dataclass(kw_only=True)
class ScaleOptions:
    backend: Literal["local", "ray"] = "local"
    """local: this process does all the work; ray: the work units (shards, batches) go to Ray actors, each
    holding its own π_ref and value models; the results are written here by this process."""
    ray_address: str | None = None
    """Ray cluster to join: None starts a local Ray instance (or reuses the one already initialized), `auto`
    joins the cluster this machine belongs to, `ray://HOST:10001` a remote one through Ray Client."""
    num_workers: int | None = None
    """Ray actors; None: one per GPU of the cluster, or one per CPU when it has no GPU (capped at the work units)."""
    vllm: bool = False
    """Sample π_ref's own tokens with vLLM (in collect, the roll-outs after the switch step; in evaluate, the π_ref
    rows); needs the `vllm` extra and a GPU. Guided tokens stay on the torch engine."""
    vllm_gpu_memory_utilization: float = 0.5
    """Share of the GPU's memory vLLM may take (the torch models of the guided part share the GPU)."""


def check_scale_options(opts: ScaleOptions) -> None:
    """One clear sentence for options that cannot work, before any engine starts."""
    if opts.num_workers is not None and opts.num_workers < 1:
        raise UserError(f"num_workers must be at least 1 (or None for one per device), got {opts.num_workers}")
    if not 0 < opts.vllm_gpu_memory_utilization <= 1:
        raise UserError(f"vllm_gpu_memory_utilization must be in (0, 1], got {opts.vllm_gpu_memory_utilization}")


# Fields that only say where the work runs: a run folder may be continued with other values of them.
PLACEMENT_FIELDS = ("backend", "ray_address", "num_workers", "vllm_gpu_memory_utilization")


def scale_fields(opts: ScaleOptions) -> dict:
    """The scale-out fields of `opts` as keyword arguments for another command's config."""
    return base_fields(opts, ScaleOptions)

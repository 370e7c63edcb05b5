"""Ray actors that each build a worker once (π_ref and value models loaded on the actor) and then run work
units (shards, evaluation batches) sent to them one at a time, results streamed back as they finish.

The worker is the local backend's own object (rollouts.ShardCollector, evaluation.BatchSampler): a Ray run
computes exactly what a local run computes. Results come back to the calling process, which writes them
(atomic shard files, the manifest) itself: the manifest has a single writer and the cluster needs no shared
filesystem for the output. An actor that dies (killed, node lost) is restarted once and its unit retried;
past that, the units still running finish and are returned, then the run stops with one clear sentence, and
a rerun of the same command resumes from what was written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from qsharp_ext.errors import UserError
from qsharp_ext.scale.options import ScaleOptions

T = TypeVar("T")
R = TypeVar("R")

RESTARTS = 1
"""Restarts of a dead actor, each retrying the unit it held: units are deterministic, so a retry is exact."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError('backend "ray" needs Ray: pip install "qsharp-ext[ray]"') from None
    return ray


def connect(address: str | None) -> Any:
    """The `ray` module, initialized: joins `address`, or starts a local instance unless one is running."""
    ray = import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as err:
            raise UserError(f"cannot reach the Ray cluster at {address!r} ({err})") from None
    return ray


def wants_gpu(device: str, cluster: dict[str, float]) -> bool:
    """Whether each actor should hold a GPU: the stage's device is not the CPU and the cluster has GPUs."""
    return device != "cpu" and cluster.get("GPU", 0) >= 1


def worker_count(requested: int | None, units: int, per_gpu: bool, cluster: dict[str, float]) -> int:
    """`requested`, or one per GPU (per CPU without GPUs) of the cluster; never more than there are units."""
    default = int(cluster.get("GPU" if per_gpu else "CPU", 1))
    return max(1, min(requested or default, units))


class _Actor:
    """Holds one worker built on the actor; runs its units."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]]) -> None:
        self.worker = factory()

    def run(self, unit: Any) -> Any:
        return self.worker(unit)

    def pid(self) -> int:
        return os.getpid()


def map_units(
    factory: Callable[[], Callable[[T], R]], units: Sequence[T], opts: ScaleOptions, device: str
) -> Iterator[tuple[T, R]]:
    """(unit, factory()(unit)) for every unit, computed on Ray actors, in the order they finish.

    `factory` is pickled to the actors (cloudpickle): it must name importable code, and the paths it holds
    (model folders) must be readable on every node.
    """
    ray = connect(opts.ray_address)
    cluster = ray.cluster_resources()
    gpu = wants_gpu(device, cluster)
    n = worker_count(opts.num_workers, len(units), gpu, cluster)
    actor_cls = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0, max_restarts=RESTARTS, max_task_retries=RESTARTS)
    actors = [actor_cls(_Actor).remote(factory) for _ in range(n)]
    todo, running, failures = list(reversed(units)), {}, []
    for actor in actors[: len(todo)]:
        unit = todo.pop()
        running[actor.run.remote(unit)] = (actor, unit)
    try:
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, unit = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:  # the actor is dead or the unit raised: no more units for it
                failures.append(_first_line(err))
                continue
            yield unit, result
            if todo:
                unit = todo.pop()
                running[actor.run.remote(unit)] = (actor, unit)
    finally:
        for actor in actors:
            ray.kill(actor)
    if failures or todo:
        raise UserError(
            f"{len(failures)} Ray worker(s) failed ({failures[0] if failures else 'no worker left'}); "
            f"{len(units) - len(failures) - len(todo)} of {len(units)} units were finished and kept: "
            "run the same command again to do the rest"
        )


def _first_line(err: BaseException) -> str:
    """The innermost user-facing sentence of a Ray error (a UserError raised on a worker stays readable)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, UserError):
        return str(cause)
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__

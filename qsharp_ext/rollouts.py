"""`collect`: one DAgger round of roll-in / roll-out data, written as Parquet shards that survive a crash.

For every sample of every training prompt a switch step h is drawn; the round's policy π^k (π_ref guided
by the current value model at η, or π_ref itself in round 1) writes the first h tokens, π_ref finishes
the text, and the task scores it. Positions from h on are targets labelled with that final reward
(prefix extension); training decides how to use them.

Every sample's noise and switch step come from a hash of (seed, round, prompt id, sample index), and
prompts are grouped into fixed shards, so a shard's rows do not depend on which shards ran before: a run
killed at any point and restarted writes exactly the data an uninterrupted run writes. It knows nothing
of training; the format on disk is rollout_data.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext.config import check_field_types
from qsharp_ext.decode_options import DecodeOptions, check_sampling_options
from qsharp_ext.errors import UserError
from qsharp_ext.eta import check_eta
from qsharp_ext.generate import guided_generate
from qsharp_ext.io import check_output_folder
from qsharp_ext.loading import load_reference, load_tokenizer, load_value_model, stop_token_ids
from qsharp_ext.prompts import prompt_token_ids
from qsharp_ext.rollout_data import (
    Rollout,
    check_settings,
    folder_relative,
    forget_broken_shards,
    read_manifest,
    read_rollouts,
    record_settings,
    record_tokenizer,
    shard_name,
    write_shard,
)
from qsharp_ext.scale import ray_pool
from qsharp_ext.scale.options import ScaleOptions, check_scale_options
from qsharp_ext.scale.vllm_sampler import VllmSampler
from qsharp_ext.tasks import Problem, Task, build_task
from qsharp_ext.value_model import ValueModel, tokenizer_digest


@dataclasses.dataclass(kw_only=True)
class CollectSettings:
    """How much to collect and how: `collect`'s fields that a pipeline's rounds share, nested there as
    `--collect.FIELD` (each round fills in its folder, number and roll-in value model)."""

    samples_per_prompt: int = 16
    """Completions per training prompt."""
    eta: float = 0.1
    """KL-regularization strength of the guided roll-in (unused without a value model: a pipeline's round 1)."""
    prompts_per_shard: int = 8
    """Prompts per shard: the unit of work written at once and skipped on resume."""
    max_prompts: int | None = None
    """Use only the first this many training prompts; None: all of them."""

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclasses.dataclass
class CollectConfig(ScaleOptions, DecodeOptions, CollectSettings):
    """Collect one round of roll-out data: roll in with π^k, roll out with π_ref, score with the task."""

    out: Path
    """The round's data folder: Parquet shards and manifest.json; an interrupted run resumes there."""
    ref_model: str
    """π_ref: a model folder (or hub id) with its tokenizer."""
    value_model: str | None = None
    """Folder of the value model that guides the roll-in (this round's π^k); None: π_ref (round 1)."""
    round: int = 1
    """DAgger round number, stored with every sample and mixed into the sample seeds."""


def check_config(cfg: CollectConfig) -> None:
    """One clear sentence for a config that cannot work, before any model loads or any file is written."""
    check_output_folder(cfg.out)
    check_scale_options(cfg)
    check_sampling_options(cfg, cfg.max_new_tokens)
    for name in ("round", "samples_per_prompt", "prompts_per_shard"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    check_eta(cfg.eta)
    if cfg.max_prompts is not None and cfg.max_prompts < 1:
        raise UserError(f"max_prompts must be at least 1 (or None for all), got {cfg.max_prompts}")


def sample_seed_and_switch(seed: int, round: int, prompt_id: str, sample: int, max_new_tokens: int) -> tuple[int, int]:
    """A sample's noise seed and switch step h ∈ [0, max_new_tokens - 1], from a hash of who it is.

    sha256, not hash(): the same on every machine and in every process.
    """
    digest = hashlib.sha256(f"{seed}\x00{round}\x00{prompt_id}\x00{sample}".encode()).digest()
    noise_seed = int.from_bytes(digest[:8], "little") >> 1  # fits a signed 64-bit column
    switch = random.Random(int.from_bytes(digest[8:16], "little")).randrange(max_new_tokens)
    return noise_seed, switch


def _model_name(name: str | None, folder: Path, run_folder: Path) -> str | None:
    """A local folder as an absolute path (the same folder from any working directory), or relative to the data
    `folder` when it lies in `run_folder` (the run can then be moved or copied); hub ids as given."""
    if name is None or not Path(name).expanduser().exists():
        return name
    path = Path(name).expanduser().resolve()
    return folder_relative(path, folder) if path.is_relative_to(Path(run_folder).resolve()) else str(path)


def _problems_digest(problems: list[Problem]) -> str:
    text = "\n".join(f"{p.id}\t{p.prompt}\t{p.answer}" for p in problems)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def collect_settings(
    cfg: CollectConfig, task: Task, problems: list[Problem], run_folder: Path | None = None
) -> dict[str, Any]:
    """Everything that decides the data (not the device or the progress bar), stored in the manifest. Models in
    `run_folder` (default: the data folder) are named relative to the data folder."""
    run_folder = cfg.out if run_folder is None else run_folder
    return {
        "task": task.name,
        "task_settings": task.settings(),
        "problems": len(problems),
        "problems_digest": _problems_digest(problems),
        "ref_model": _model_name(cfg.ref_model, cfg.out, run_folder),
        "value_model": _model_name(cfg.value_model, cfg.out, run_folder),
        "round": cfg.round,
        "samples_per_prompt": cfg.samples_per_prompt,
        "eta": cfg.eta if cfg.value_model is not None else None,
        "max_new_tokens": cfg.max_new_tokens,
        "top_k": cfg.top_k,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "dtype": cfg.dtype,
        "prompts_per_shard": cfg.prompts_per_shard,
        "seed": cfg.seed,
    } | ({"vllm": True} if cfg.vllm else {})  # vLLM draws π_ref's tokens from its own random stream


def collect_shard(
    cfg: CollectConfig,
    task: Task,
    problems: list[Problem],
    prompt_ids: list[list[int]],
    ref: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    value_model: ValueModel | None,
    sampler: VllmSampler | None = None,
) -> list[Rollout]:
    """Roll out `samples_per_prompt` samples of each problem (its prompt's ids in `prompt_ids`) in one batch; rows
    are prompt-major.

    With a vLLM `sampler`, the torch engine writes the guided roll-in only and vLLM the π_ref roll-out.
    """
    draws = [
        sample_seed_and_switch(cfg.seed, cfg.round, p.id, s, cfg.max_new_tokens)
        for p in problems
        for s in range(cfg.samples_per_prompt)
    ]
    eta = cfg.eta if value_model is not None else None
    seeds, switches = [noise_seed for noise_seed, _ in draws], [switch for _, switch in draws]
    if sampler is None:
        completions = _generate(cfg, ref, tokenizer, value_model, prompt_ids, seeds, switches, cfg.max_new_tokens)
    else:
        rows = [ids for ids in prompt_ids for _ in range(cfg.samples_per_prompt)]
        prefixes = [[] for _ in rows]  # round 1: π_ref from the first token
        if value_model is not None and max(switches) > 0:  # guided roll-in up to each row's switch step
            longest = _generate(cfg, ref, tokenizer, value_model, prompt_ids, seeds, switches, max(switches))
            prefixes = [tokens[:switch] for tokens, switch in zip(longest, switches, strict=True)]
        completions = sampler.continue_rows(rows, prefixes, seeds, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                            stop_token_ids(ref, tokenizer))  # fmt: skip
    rollouts = []
    for row, (completion, (noise_seed, switch)) in enumerate(zip(completions, draws, strict=True)):
        if value_model is None:  # the roll-in policy is π_ref itself: every prefix has a π_ref continuation
            switch = 0
        p, s = divmod(row, cfg.samples_per_prompt)
        text = tokenizer.decode(completion, skip_special_tokens=True)
        rollouts.append(
            Rollout(
                prompt_id=problems[p].id, sample_index=s, round=cfg.round, eta=eta, seed=noise_seed,
                prompt_ids=prompt_ids[p], completion_ids=completion, switch=min(switch, len(completion)),
                reward=task.reward(problems[p], text),
            )
        )  # fmt: skip
    return rollouts


def _generate(
    cfg: CollectConfig,
    ref: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    value_model: ValueModel | None,
    prompt_ids: list[list[int]],
    seeds: list[int],
    switches: list[int],
    max_new_tokens: int,
) -> list[list[int]]:
    """Completions from the torch engine: guided for each row's first `switches` tokens, then π_ref."""
    eta = cfg.eta if value_model is not None else None
    out = guided_generate(
        ref, tokenizer, prompt_ids, value_model,
        etas=(eta,), num_samples=cfg.samples_per_prompt, max_new_tokens=max_new_tokens, top_k=cfg.top_k,
        temperature=cfg.temperature, top_p=cfg.top_p, row_seeds=seeds, rollin_steps=switches,
    )  # fmt: skip
    return out.token_lists()


class ShardCollector:
    """π_ref, its tokenizer, the roll-in value model (and vLLM) loaded once; collects shards by index.

    The one worker of both backends: the local loop calls it in this process, each Ray actor holds one.
    """

    def __init__(
        self,
        cfg: CollectConfig,
        task: Task,
        shards: list[list[Problem]],
        reference: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    ) -> None:
        self.cfg, self.task, self.shards = cfg, task, shards
        self.ref, self.tokenizer = reference or load_reference(cfg.ref_model, cfg.device, cfg.dtype)
        # every shard's prompts tokenized (and unknown words refused) before any shard runs
        self.prompt_ids = [prompt_token_ids(self.tokenizer, [p.prompt for p in shard]) for shard in shards]
        self.value_model = None  # a shared-trunk value model reads π_ref's layers: it loads with π_ref
        if cfg.value_model:
            self.value_model = load_value_model(cfg.value_model, self.tokenizer, cfg.device, cfg.dtype, self.ref)
        self.sampler = VllmSampler(cfg.ref_model, cfg.seed, cfg.vllm_gpu_memory_utilization) if cfg.vllm else None

    def __call__(self, index: int) -> list[Rollout]:
        shard = self.shards[index]
        return collect_shard(self.cfg, self.task, shard, self.prompt_ids[index], self.ref, self.tokenizer,
                             self.value_model, self.sampler)  # fmt: skip


def _training_problems(cfg: CollectConfig, task: Task) -> list[Problem]:
    problems = task.train_problems()[: cfg.max_prompts]
    if not problems:
        raise UserError(f"task {task.name} has no training prompts to collect")
    return problems


def run_collect(
    cfg: CollectConfig,
    task: Task | None = None,
    progress: bool = True,
    reference: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    run_folder: Path | None = None,
) -> Path:
    """Collect (or finish collecting) the round into `cfg.out`; returns the folder. Finished shards are kept.

    `reference` is π_ref and its tokenizer already in memory (`train_value_model`): then cfg.ref_model is only
    its name (recorded with the data), and the work runs in this process, on π_ref's device. `run_folder` is the
    folder of the whole run that cfg.out lies in (the pipeline's): the models in it are recorded relative to
    cfg.out, so the run folder can be moved or copied and resumed.
    """
    check_config(cfg)
    if reference is not None and (cfg.backend != "local" or cfg.vllm):
        raise UserError("π_ref given in memory is sampled in this process: use backend local without vllm")
    task = task if task is not None else build_task(cfg.task, cfg.task_options)
    problems = _training_problems(cfg, task)
    shards = [problems[i : i + cfg.prompts_per_shard] for i in range(0, len(problems), cfg.prompts_per_shard)]
    out, settings = Path(cfg.out), collect_settings(cfg, task, problems, run_folder)
    check_settings(out, settings)
    if out.is_dir() and (broken := forget_broken_shards(out)):
        print(f"collecting again the shards that do not read back: {', '.join(broken)}", file=sys.stderr)
    todo = [i for i in range(len(shards)) if shard_name(i) not in read_manifest(out)["shards"]]
    if not todo:
        return out
    if cfg.backend == "ray":
        finished = ray_pool.map_units(functools.partial(ShardCollector, cfg, task, shards), todo, cfg, cfg.device)
        tokenizer = load_tokenizer(cfg.ref_model)  # the actors hold theirs
    else:
        collector = ShardCollector(cfg, task, shards, reference)
        finished = ((index, collector(index)) for index in todo)
        tokenizer = collector.tokenizer
    digest = tokenizer_digest(tokenizer)
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc=f"collect round {cfg.round}", unit="shard",
               disable=not progress)  # fmt: skip
    for index, rollouts in finished:
        record_settings(out, settings)  # only once the models load: a typo leaves no folder behind
        record_tokenizer(out, digest)  # train refuses this data for a π_ref of other token ids
        write_shard(out, index, rollouts)  # this process is the manifest's only writer, whatever the backend
        bar.update()
    bar.close()
    return out


def summary_line(out: Path, seconds: float | None = None) -> str:
    """One line about a collected folder: samples, mean reward, mean completion length (and time taken)."""
    rollouts = read_rollouts([Path(out)])
    mean_reward = sum(r.reward for r in rollouts) / len(rollouts)
    mean_len = sum(len(r.completion_ids) for r in rollouts) / len(rollouts)
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return f"collected {len(rollouts)} samples{took}: mean reward {mean_reward:.4f}, mean length {mean_len:.1f} tokens"


def main(argv: list[str] | None = None) -> int:
    """`python -m qsharp_ext.rollouts --out DIR --ref-model DIR ...` (YAML with --config)."""
    from qsharp_ext.config import parse_config

    prog = "python -m qsharp_ext.rollouts"
    try:
        cfg = parse_config(CollectConfig, sys.argv[1:] if argv is None else argv, prog, CollectConfig.__doc__ or "")
        start = time.perf_counter()
        out = run_collect(cfg)
        print(f"{summary_line(out, time.perf_counter() - start)}; data in {out}")
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

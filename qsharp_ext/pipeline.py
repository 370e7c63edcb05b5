"""`qsharp-ext pipeline`: DAgger rounds of collect → train → evaluate in one run folder, resumable.

Round k collects roll-outs with π^{k-1} (round 1: π_ref; later rounds: π_ref guided by the previous round's
Q♯ value model at `collect_eta`), trains the Q♯ value model (and the CD baseline's mean head, unless CD
steers with Q♯'s model: `cd_from_qsharp`) on the data of rounds 1..k, and evaluates π_ref, CD and Q♯ at
every η. Every stage resumes on its own (collect by shard, train from its last checkpoint, evaluate when its
results are missing), so re-running the same command after a crash or Ctrl-C continues where it stopped,
and a finished run is not redone.

Run folder:
    pipeline.json            the config the run was started with (a different config is refused)
    ref_model/               π_ref when it is made on the fly (`ref_model: tiny`)
    round-K/data/            roll-out shards + manifest.json
    round-K/qsharp/          Q♯ value model: model/, checkpoints/, metrics.jsonl, training_curve.png
    round-K/cd/              CD value model (mean head), same layout (absent under cd_from_qsharp)
    round-K/eval/            results.json, results.md, pareto.png
    results.json, results.md, pareto.png    the last round's evaluation
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Literal

import torch

from qsharp_ext import evaluation, rollouts, train_report, training
from qsharp_ext.config import base_fields, check_field_types
from qsharp_ext.decode_options import DecodeOptions, check_sampling_options, decode_fields
from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig, EvaluateSettings, run_evaluate, summary_line
from qsharp_ext.io import check_output_folder, record_run_settings, write_folder
from qsharp_ext.loading import resolve_dtype
from qsharp_ext.rollouts import CollectConfig, CollectSettings, run_collect
from qsharp_ext.scale.options import PLACEMENT_FIELDS, ScaleOptions, check_scale_options, scale_fields
from qsharp_ext.tasks import Task, build_task
from qsharp_ext.training import TrainConfig, TrainSettings, run_train

TINY = "tiny"


@dataclasses.dataclass
class PipelineConfig(ScaleOptions, DecodeOptions):
    """Rounds of DAgger data collection, value-model training and evaluation (Q♯, CD, π_ref).

    Each stage's own settings are nested under its name, with the stage command's defaults and meaning:
    `--collect.samples-per-prompt`, `--train.lr`, `--evaluate.etas` (in YAML, a `train:` mapping and so on);
    see `collect --help`, `train --help`, `evaluate --help`. The decoding fields (task, top_k, ...) are shared
    by collect and evaluate; the scale-out fields (Ray workers, vLLM sampling) apply to them; training runs here.
    """

    out: Path = Path("runs/pipeline")
    """Run folder; re-running the same command continues an interrupted run there."""
    ref_model: str = TINY
    """π_ref: a folder or hub id; `tiny` makes a small random Llama over the task's words (synthetic tasks)."""
    rounds: int = 2
    """DAgger rounds (the paper uses 2)."""
    kind: Literal["bernoulli", "histogram"] = "bernoulli"
    """Q♯ head: bernoulli or histogram (the CD baseline's own model has a mean head; see cd_from_qsharp)."""
    train_cd: bool = True
    """Also run the CD baseline: a mean head trained by MSE on the same data (see cd_from_qsharp)."""
    cd_from_qsharp: bool = False
    """CD steers with Q♯'s own value model by its rule, π_ref·exp(E[z]/η), instead of training a mean head: for a
    reward in {0, 1} the Bernoulli head's p is the E[z] that CD regresses, so the methods then differ in the rule
    alone and one value-model training is saved (needs train_cd)."""
    evaluate_every_round: bool = True
    """Evaluate after each round (False: after the last one only)."""
    collect: CollectSettings = dataclasses.field(default_factory=CollectSettings)
    """Each round's roll-outs (`eta`: the guided roll-in's η from round 2 on)."""
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    """Each round's value models, Q♯ and CD alike (each starts from its own previous round's model)."""
    evaluate: EvaluateSettings = dataclasses.field(default_factory=EvaluateSettings)
    """Each round's evaluation (`etas`: None is π_ref's own row, each η a Q♯ and a CD row)."""

    def __post_init__(self) -> None:
        check_field_types(self)  # PipelineConfig(out="run", train={"lr": 1e-3}) works; a wrong type is one sentence


def check_run_folder(cfg: PipelineConfig, task: Task) -> None:
    """Record the config (and the task's options) on first use; refuse to continue a run folder started
    with other ones."""
    settings = {**dataclasses.asdict(cfg), "task_settings": task.settings()}
    ignore = ("out", "device", *PLACEMENT_FIELDS)
    record_run_settings(cfg.out / "pipeline.json", settings, ignore=ignore)


def prepare_reference(cfg: PipelineConfig, task) -> str:
    """π_ref's folder: the given one, or a small random Llama over the task's words saved in the run."""
    if cfg.ref_model != TINY:
        return cfg.ref_model
    if not hasattr(task, "tokenizer"):
        raise UserError(f"ref_model: tiny needs a synthetic task with its own tokenizer; {task.name} has none")
    folder = cfg.out / "ref_model"
    if not (folder / "config.json").is_file():
        from qsharp_ext.tasks.first_token import make_tiny_reference

        def fill(tmp: Path) -> None:
            make_tiny_reference(task, seed=cfg.seed).save_pretrained(tmp)
            task.tokenizer().save_pretrained(tmp)

        write_folder(folder, fill)
    return str(folder)


def train_config(cfg: PipelineConfig, ref: str, round_k: int, kind: str) -> TrainConfig:
    """Round k's training run for one head; it starts from round k-1's model of the same kind. The CD baseline's
    mean head fits by its own loss and, under head_init lm_head (a Bernoulli head's start), starts fresh."""
    name = "qsharp" if kind != "mean" else "cd"
    previous = cfg.out / f"round-{round_k - 1}" / name / "model"
    settings = base_fields(cfg.train, TrainSettings)
    if kind == "mean":
        settings["fit"] = "likelihood"
        settings["head_init"] = "fresh" if cfg.train.head_init == "lm_head" else cfg.train.head_init
    return TrainConfig(
        **settings,
        out=cfg.out / f"round-{round_k}" / name,
        data=tuple(cfg.out / f"round-{k}" / "data" for k in range(1, round_k + 1)),
        ref_model=ref,
        init_value_model=str(previous) if round_k > 1 else None,
        kind=kind,
        bf16=resolve_dtype(cfg.dtype, cfg.device) == torch.bfloat16,
        dtype=cfg.dtype,
        seed=cfg.seed + round_k,
        device=cfg.device,
    )


def collect_config(cfg: PipelineConfig, ref: str, round_k: int) -> CollectConfig:
    """Round k's roll-outs: round 1 with π_ref, later rounds guided by round k-1's Q♯ value model."""
    guide = cfg.out / f"round-{round_k - 1}" / "qsharp" / "model"
    return CollectConfig(
        out=cfg.out / f"round-{round_k}" / "data", ref_model=ref, value_model=str(guide) if round_k > 1 else None,
        round=round_k, **base_fields(cfg.collect, CollectSettings), **decode_fields(cfg), **scale_fields(cfg),
    )  # fmt: skip


def evaluate_config(cfg: PipelineConfig, ref: str, round_k: int) -> EvaluateConfig:
    """Round k's evaluation: π_ref, and its Q♯ (and CD) value models at every η."""
    folder = cfg.out / f"round-{round_k}"
    return EvaluateConfig(
        out=folder / "eval", ref_model=ref, qsharp_model=str(folder / "qsharp" / "model"),
        cd_model=cd_model(cfg, folder), **base_fields(cfg.evaluate, EvaluateSettings), **decode_fields(cfg),
        **scale_fields(cfg),
    )  # fmt: skip


def cd_model(cfg: PipelineConfig, folder: Path) -> str | None:
    """The model CD steers with in a round's folder: its own mean head, Q♯'s model (cd_from_qsharp), or none."""
    if not cfg.train_cd:
        return None
    return str(folder / ("qsharp" if cfg.cd_from_qsharp else "cd") / "model")


def trains_cd(cfg: PipelineConfig) -> bool:
    """Whether each round trains CD's own mean head."""
    return cfg.train_cd and not cfg.cd_from_qsharp


def check_config(cfg: PipelineConfig, task: Task) -> None:
    """Every field of every stage, checked by the stages' own checks on the configs the rounds will run, before
    the run folder is written or anything is collected (a mistake in the last stage would otherwise surface
    only after the first ones had run, and the corrected rerun would be refused as other settings)."""
    check_output_folder(cfg.out)
    if cfg.rounds < 1:
        raise UserError(f"rounds must be at least 1, got {cfg.rounds}")
    check_scale_options(cfg)
    check_sampling_options(cfg, cfg.max_new_tokens)  # shared by every stage: an error here names no stage
    stages = [("collect", rollouts.check_config, collect_config(cfg, cfg.ref_model, 1))]
    if cfg.cd_from_qsharp and not cfg.train_cd:
        raise UserError("cd_from_qsharp evaluates CD with Q♯'s value model; it needs train_cd (the CD baseline) on")
    kinds = (cfg.kind, "mean") if trains_cd(cfg) else (cfg.kind,)
    stages += [("train", training.check_config, train_config(cfg, cfg.ref_model, 1, kind)) for kind in kinds]
    stages += [("evaluate", evaluation.check_config, evaluate_config(cfg, cfg.ref_model, cfg.rounds))]
    for stage, check, stage_cfg in stages:
        try:
            check(stage_cfg)
        except UserError as err:
            raise UserError(f"{stage} stage: {err}") from None
    if cfg.train.future_targets == "task":
        training.check_task_hook(task)


def run_round(cfg: PipelineConfig, task, ref: str, k: int) -> list[dict] | None:
    folder = cfg.out / f"round-{k}"
    print(f"round {k}/{cfg.rounds}: collect")
    print(f"  {rollouts.summary_line(run_collect(collect_config(cfg, ref, k), task=task, run_folder=cfg.out))}")
    print(f"round {k}/{cfg.rounds}: train Q♯ ({cfg.kind} head)")
    print(f"  {train_report.summary_line(run_train(train_config(cfg, ref, k, cfg.kind), task=task))}")
    if trains_cd(cfg):
        print(f"round {k}/{cfg.rounds}: train CD (mean head)")
        print(f"  {train_report.summary_line(run_train(train_config(cfg, ref, k, 'mean'), task=task))}")
    if not (cfg.evaluate_every_round or k == cfg.rounds):
        return None
    results = folder / "eval" / "results.json"
    if results.is_file():
        return json.loads(results.read_text())
    print(f"round {k}/{cfg.rounds}: evaluate")
    rows = run_evaluate(evaluate_config(cfg, ref, k), task=task)
    print(f"round {k}: {summary_line(rows)}")
    return rows


def run_pipeline(cfg: PipelineConfig, task: Task | None = None) -> list[dict]:
    """All rounds; returns the last round's evaluation rows (also copied to the run folder's top).

    `task` overrides `cfg.task` with a task built with non-default options (its name must match).
    """
    if task is not None and task.name != cfg.task:
        raise UserError(f"the given task is {task.name!r} but the config names {cfg.task!r}")
    task = task or build_task(cfg.task, cfg.task_options)
    check_config(cfg, task)
    check_run_folder(cfg, task)
    ref = prepare_reference(cfg, task)
    rows: list[dict] | None = None
    for k in range(1, cfg.rounds + 1):
        rows = run_round(cfg, task, ref, k)
    final = cfg.out / f"round-{cfg.rounds}" / "eval"
    for name in ("results.json", "results.md", "pareto.png"):
        shutil.copyfile(final / name, cfg.out / name)
    return rows

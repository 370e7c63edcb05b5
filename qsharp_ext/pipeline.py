"""`qsharp-ext pipeline`: DAgger rounds of collect → train → evaluate in one run folder, resumable.

Round k collects roll-outs with π^{k-1} (round 1: π_ref; later rounds: π_ref guided by the previous round's
Q♯ value model at `collect_eta`), trains the Q♯ value model (and the CD baseline's mean head) on the data
of rounds 1..k, and evaluates π_ref, CD and Q♯ at every η. Every stage resumes on its own (collect by
shard, train from its last checkpoint, evaluate when its results are missing), so re-running the same
command after a crash or Ctrl-C continues where it stopped, and a finished run is not redone.

Run folder:
    pipeline.json            the config the run was started with (a different config is refused)
    ref_model/               π_ref when it is made on the fly (`ref_model: tiny`)
    round-K/data/            roll-out shards + manifest.json
    round-K/qsharp/          Q♯ value model: model/, checkpoints/, metrics.jsonl, training_curve.png
    round-K/cd/              CD value model (mean head), same layout
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

from qsharp_ext import evaluation, rollouts, train_checkpoints, train_report, training
from qsharp_ext.config import check_field_types
from qsharp_ext.decode_options import DecodeOptions, decode_fields
from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig, run_evaluate, summary_line
from qsharp_ext.io import check_output_folder, record_run_settings, write_folder
from qsharp_ext.loading import resolve_dtype
from qsharp_ext.rollouts import CollectConfig, run_collect
from qsharp_ext.scale.options import PLACEMENT_FIELDS, ScaleOptions, check_scale_options, scale_fields
from qsharp_ext.tasks import Task, build_task
from qsharp_ext.training import TrainConfig, run_train
from qsharp_ext.value_model import HeadInit, Parameterization

TINY = "tiny"


@dataclasses.dataclass
class PipelineConfig(ScaleOptions, DecodeOptions):
    """Rounds of DAgger data collection, value-model training and evaluation (Q♯, CD, π_ref).

    The scale-out fields (Ray workers, vLLM sampling) apply to collect and evaluate; training runs here.
    """

    out: Path = Path("runs/pipeline")
    """Run folder; re-running the same command continues an interrupted run there."""
    ref_model: str = TINY
    """π_ref: a folder or hub id; `tiny` makes a small random Llama over the task's words (synthetic tasks)."""
    rounds: int = 2
    """DAgger rounds (the paper uses 2)."""
    samples_per_prompt: int = 16
    """Roll-outs per training prompt and round."""
    max_train_prompts: int | None = None
    """Use only the first N training prompts."""
    collect_eta: float = 0.1
    """η of the guided roll-in from round 2 on."""
    value_model_base: str | None = None
    """Build the value models from this causal LM (folder or hub id) with π_ref's tokenizer instead of from π_ref."""
    num_layers: int | None = 2
    """First layers of π_ref (or value_model_base) copied into the value models; 0 or None: all of them."""
    extra_layers: int = 0
    """Freshly initialised layers the value models add on top of the copied ones."""
    kind: Literal["bernoulli", "histogram"] = "bernoulli"
    """Q♯ head: bernoulli or histogram (the CD baseline always uses a mean head)."""
    parameterization: Parameterization = "v"
    """v (score each candidate prefix) or q (one distribution per next token)."""
    head_init: HeadInit = "fresh"
    """Q♯ head's start: fresh (small weights), linear (torch.nn.Linear's scale; the CD baseline's head too), or
    lm_head (a Q-type bernoulli head on all layers, num_layers 0, starts as the source model's LM head; see
    `train --help`; the CD baseline's mean head then starts fresh)."""
    prefix_extension: bool = True
    """Label every prefix from the switch step on with the final reward; False: the switch prefix only."""
    fit: training.Fit = "likelihood"
    """Q♯ head's loss: likelihood (BCE / two-hot NLL) or mse (regress its expected reward; an ablation)."""
    future_tokens: int = 0
    """K of the future-token auxiliary objective (both value models): training-only heads also predict the
    roll-out's next 1 … K tokens at every target position; 0: off. See `train --help`."""
    future_weight: float = 1.0
    """λ: the future-token loss's weight beside the value loss."""
    future_targets: training.FutureTargetsSource = "rollout"
    """rollout: the heads predict the roll-out's own next tokens; task: the task's targets (from the prompt
    alone; the star graph has them). See `train --help`."""
    group_by_prompt: bool = False
    """Keep all roll-outs of a prompt in the same training batch (make batch_size a multiple of
    samples_per_prompt)."""
    train_steps: int = 200
    """Optimizer steps per round."""
    batch_size: int = 16
    """Trajectories per training step."""
    lr: float = 3e-4
    """Peak learning rate."""
    backbone_lr_scale: float = 1.0
    """The value models' backbone learning rate as a fraction of lr; 0 freezes it and trains the head only."""
    train_eval_every: int = 50
    """Held-out metrics and a checkpoint every N training steps."""
    train_cd: bool = True
    """Also train the CD baseline (mean head, MSE) on the same data."""
    etas: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03)
    """η values evaluated for Q♯ and CD; π_ref itself is always evaluated too (no None here)."""
    eval_samples: int = 8
    """Samples per evaluation prompt."""
    max_eval_prompts: int | None = None
    """Evaluate on the first N evaluation prompts."""
    evaluate_every_round: bool = True
    """Evaluate after each round (False: after the last one only)."""

    def __post_init__(self) -> None:
        check_field_types(self)  # PipelineConfig(out="run") works; a wrong type is one sentence


def check_run_folder(cfg: PipelineConfig, task: Task) -> None:
    """Record the config (and the task's options) on first use; refuse to continue a run folder started
    with other ones."""
    settings = {**dataclasses.asdict(cfg), "task_settings": task.settings()}
    ignore = ("out", "device", *PLACEMENT_FIELDS)
    introduced = {"vllm": False, **train_checkpoints.INTRODUCED}  # settings added later, as older runs had them
    record_run_settings(cfg.out / "pipeline.json", settings, ignore=ignore, introduced=introduced)


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
    """Round k's training run for one head; it starts from round k-1's model of the same kind."""
    name = "qsharp" if kind != "mean" else "cd"
    previous = cfg.out / f"round-{round_k - 1}" / name / "model"
    return TrainConfig(
        out=cfg.out / f"round-{round_k}" / name,
        data=tuple(cfg.out / f"round-{k}" / "data" for k in range(1, round_k + 1)),
        ref_model=ref,
        init_value_model=str(previous) if round_k > 1 else None,
        value_model_base=cfg.value_model_base,
        num_layers=cfg.num_layers,
        extra_layers=cfg.extra_layers,
        kind=kind,
        parameterization=cfg.parameterization,
        head_init="fresh" if kind == "mean" and cfg.head_init == "lm_head" else cfg.head_init,
        prefix_extension=cfg.prefix_extension,
        fit=cfg.fit if kind != "mean" else "likelihood",
        future_tokens=cfg.future_tokens,
        future_weight=cfg.future_weight,
        future_targets=cfg.future_targets,
        group_by_prompt=cfg.group_by_prompt,
        steps=cfg.train_steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        backbone_lr_scale=cfg.backbone_lr_scale,
        eval_every=cfg.train_eval_every,
        save_every=cfg.train_eval_every,
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
        round=round_k, samples_per_prompt=cfg.samples_per_prompt, eta=cfg.collect_eta,
        max_prompts=cfg.max_train_prompts, **decode_fields(cfg), **scale_fields(cfg),
    )  # fmt: skip


def evaluate_config(cfg: PipelineConfig, ref: str, round_k: int) -> EvaluateConfig:
    """Round k's evaluation: π_ref, and its Q♯ (and CD) value models at every η."""
    folder = cfg.out / f"round-{round_k}"
    return EvaluateConfig(
        out=folder / "eval", ref_model=ref, qsharp_model=str(folder / "qsharp" / "model"),
        cd_model=str(folder / "cd" / "model") if cfg.train_cd else None, etas=(None, *cfg.etas),
        num_samples=cfg.eval_samples, max_prompts=cfg.max_eval_prompts, **decode_fields(cfg), **scale_fields(cfg),
    )  # fmt: skip


def check_config(cfg: PipelineConfig, task: Task) -> None:
    """Every field of every stage, checked by the stages' own checks on the configs the rounds will run, before
    the run folder is written or anything is collected (a mistake in the last stage would otherwise surface
    only after the first ones had run, and the corrected rerun would be refused as other settings)."""
    check_output_folder(cfg.out)
    if cfg.rounds < 1:
        raise UserError(f"rounds must be at least 1, got {cfg.rounds}")
    if None in cfg.etas:
        raise UserError("the pipeline's etas are the value models' η (π_ref is always evaluated): drop None")
    check_scale_options(cfg)
    stages = [("collect", rollouts.check_config, collect_config(cfg, cfg.ref_model, 1))]
    kinds = (cfg.kind, "mean") if cfg.train_cd else (cfg.kind,)
    stages += [("train", training.check_config, train_config(cfg, cfg.ref_model, 1, kind)) for kind in kinds]
    stages += [("evaluate", evaluation.check_config, evaluate_config(cfg, cfg.ref_model, cfg.rounds))]
    for stage, check, stage_cfg in stages:
        try:
            check(stage_cfg)
        except UserError as err:
            raise UserError(f"{stage} stage: {err}") from None
    if cfg.future_targets == "task":
        training.check_task_hook(task)


def run_round(cfg: PipelineConfig, task, ref: str, k: int) -> list[dict] | None:
    folder = cfg.out / f"round-{k}"
    print(f"round {k}/{cfg.rounds}: collect")
    print(f"  {rollouts.summary_line(run_collect(collect_config(cfg, ref, k), task=task, run_folder=cfg.out))}")
    print(f"round {k}/{cfg.rounds}: train Q♯ ({cfg.kind} head)")
    print(f"  {train_report.summary_line(run_train(train_config(cfg, ref, k, cfg.kind), task=task))}")
    if cfg.train_cd:
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

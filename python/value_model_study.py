"""The value model's depth and the paper's ablations, on a finished (or finishing) `qsharp-ext pipeline` run.

    python python/value_model_study.py sweep --run runs/smollm2-arithmetic --layers 2 6 15 30
    python python/value_model_study.py ablations --run runs/smollm2-arithmetic --eta 0.1
    python python/value_model_study.py steps --models runs/smollm2-arithmetic/round-1/qsharp --out runs/steps

sweep: one Q♯ value model per depth L (π_ref's first L layers), trained on round 1's data exactly as the
run trains its own (same steps, batch, lr, head); parameter counts of π_ref and of each value model and the
held-out ROC-AUC, pooled and within prompts → RUN/sweep/{sweep.json, sweep.md, sweep.png}.

ablations: the run's Q♯ (its head and loss, prefix extension) after `--rounds` DAgger rounds against one
change at a time: a Q-type (resp. V-type) head, MSE regression of the mean instead of the likelihood, and
labels at the switch position only, each retrained on the run's own data for the same rounds; plus the
run's own Q♯ after the other number of rounds (1 vs 2). Round 2's data was rolled in with the run's
round-1 Q♯, so a 2-round variant reuses it rather than collecting with its own round-1 model (the paper's
"reuse the data where the variant allows"). Every model is evaluated on the same prompts with the same
noise at one η → RUN/ablations/{ablations.json, ablations.md}.

steps: trained value models' held-out ROC-AUC (pooled and within prompts) at each completion step (the first answer
token is where guidance has to act), with the number of prompts whose samples both succeed and fail (only
those give pairs) → OUT/{steps.json, steps.md}.

Every stage resumes: finished trainings and evaluations are read back, not redone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
import tyro
from safetensors import safe_open

from qsharp_ext import metrics as M
from qsharp_ext.config import from_recorded
from qsharp_ext.decode_options import decode_fields
from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig, load_prompt_rewards, paired_gain, run_evaluate
from qsharp_ext.finished_runs import finished_run, score_held_out
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.loading import resolve_device
from qsharp_ext.pipeline import PipelineConfig, prepare_reference, train_config
from qsharp_ext.plots import save_figure
from qsharp_ext.tasks import Task, build_task
from qsharp_ext.train_batches import target_prefixes
from qsharp_ext.training import TrainConfig, predict_targets, run_train


@dataclasses.dataclass
class Sweep:
    """Train one Q♯ value model per depth on round 1's data; report sizes and held-out ROC-AUC."""

    run: Path
    """A pipeline run folder whose round 1 data is collected."""
    layers: tuple[int, ...] = (2, 6, 15, 30)
    """Depths L to try: π_ref's first L layers (0: all of them)."""


@dataclasses.dataclass
class Ablations:
    """Retrain Q♯ with one change at a time on the run's data and evaluate each at one η."""

    run: Path
    """A pipeline run folder whose two rounds of data are collected and whose Q♯ models are trained."""
    eta: float = 0.1
    """η at which every variant is evaluated."""
    rounds: int = 2
    """DAgger rounds of the compared models: 2, or 1 (half the training; the 2-round model is then the
    rounds ablation)."""
    max_prompts: int | None = None
    """Evaluate on the first N evaluation prompts (default: the run's own evaluation prompts)."""


@dataclasses.dataclass
class Steps:
    """Held-out ROC-AUC, pooled and within prompts, at each completion step, for finished value-model runs."""

    models: tuple[Path, ...]
    """Training run folders (summary.json and model/), e.g. RUN/round-1/qsharp."""
    out: Path
    """Where steps.json and steps.md go."""


def load_run(run: Path) -> PipelineConfig:
    """The pipeline config a run folder was started with (its pipeline.json)."""
    path = run / "pipeline.json"
    if not path.is_file():
        raise UserError(f"{run} is not a pipeline run folder (no pipeline.json)")
    return from_recorded(PipelineConfig, json.loads(path.read_text()), out=run)


def open_run(run: Path) -> tuple[PipelineConfig, Task, str]:
    """A run's config, its task and π_ref's folder, built once for every stage of a study."""
    cfg = load_run(run)
    task = build_task(cfg.task, cfg.task_options)
    return cfg, task, prepare_reference(cfg, task)


def count_parameters(folder: Path) -> int:
    """Parameters stored in a model folder's safetensors files (tied weights are stored once)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118 (not iterable)
    return total


def trained(cfg: TrainConfig) -> dict[str, Any]:
    """run_train (a finished run is read back), with the training time its summary.json records.

    A run finished before the within-prompt ROC-AUC existed has its saved model scored again for it.
    """
    metrics = run_train(cfg)
    if "within_prompt_auc" not in metrics:
        metrics |= score_held_out(cfg.out)
    return {**metrics, "seconds": json.loads((Path(cfg.out) / "summary.json").read_text())["seconds"]}


def run_sweep(opts: Sweep) -> list[dict[str, Any]]:
    cfg, _, ref = open_run(opts.run)
    ref_params = count_parameters(Path(ref))
    rows = []
    for layers in opts.layers:
        train = train_config(cfg, ref, 1, cfg.kind)  # the run's own round-1 Q♯ when L is the run's depth
        if layers != cfg.train.num_layers:
            train = dataclasses.replace(train, out=opts.run / "sweep" / f"L{layers}", num_layers=layers)
        print(f"sweep: L = {layers}")
        metrics = trained(train)
        rows.append({
            "layers": layers, "value_params": count_parameters(train.out / "model"), "ref_params": ref_params,
            "roc_auc": metrics["roc_auc"], "within_prompt_auc": metrics["within_prompt_auc"],
            "eval_loss": metrics["eval_loss"], "ece": metrics["ece"],
            "train_seconds": metrics["seconds"],
        })  # fmt: skip
    folder = opts.run / "sweep"
    write_json(folder / "sweep.json", rows)
    header = f"# Value-model depth: round 1's data, {cfg.train.steps} steps each (π_ref {ref_params:,} parameters)\n\n"
    columns = ["layers", "value_params", "roc_auc", "within_prompt_auc", "eval_loss", "ece", "train_seconds"]
    atomic_write_text(folder / "sweep.md", header + markdown_table(rows, columns))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sizes = [r["value_params"] / 1e6 for r in rows]
    ax.plot(sizes, [r["roc_auc"] for r in rows], "o-", label="pooled")
    ax.plot(sizes, [r["within_prompt_auc"] for r in rows], "s-", label="within prompts")
    for r, size in zip(rows, sizes, strict=True):
        ax.annotate(f"L={r['layers']}", (size, r["roc_auc"]), textcoords="offset points", xytext=(4, 4))
    ax.axhline(0.5, color="grey", ls=":", label="chance")
    ax.set(xlabel="value-model parameters (M)", ylabel="held-out ROC-AUC", title="Value-model depth")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, folder / "sweep.png")
    return rows


def variants(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Each ablation as the changes it makes to the run's training config."""
    other_head = "q" if cfg.train.parameterization == "v" else "v"
    fit = cfg.train.fit
    other_fit = ("MSE regression of the mean", "mse") if fit == "likelihood" else ("likelihood fit", "likelihood")
    # An LM-head start exists for a Q-type head only (one row per candidate token): a V-type head starts fresh.
    head_start = {"head_init": "fresh"} if cfg.train.head_init == "lm_head" else {}
    return {
        f"{other_head.upper()}-type head": {"parameterization": other_head, **head_start},
        other_fit[0]: {"fit": other_fit[1]},
        "switch position only (no prefix extension)": {"prefix_extension": not cfg.train.prefix_extension},
    }


def train_variant(cfg: PipelineConfig, ref: str, folder: Path, changes: dict[str, Any], rounds: int) -> Path:
    """A variant's rounds, each starting from its own previous round's model; returns the last model."""
    previous = None
    for k in range(1, rounds + 1):
        base = train_config(cfg, ref, k, cfg.kind)
        init = {"init_value_model": str(previous)} if previous else {}
        trained(dataclasses.replace(base, out=folder / f"round-{k}", **init, **changes))
        previous = folder / f"round-{k}" / "model"
    return previous


def rounds_name(rounds: int) -> str:
    return f"{rounds} DAgger round{'s' * (rounds > 1)}"


def evaluate_model(
    cfg: PipelineConfig, task: Task, ref: str, model: Path, out: Path, eta: float, n_prompts: int | None
) -> dict[str, Any]:
    """The one Q♯ row of `model` at `eta` on the first `n_prompts` evaluation prompts (read back when done;
    evaluated again when it predates samples.jsonl, which the paired comparison needs)."""
    results = out / "results.json"
    if not (results.is_file() and (out / "samples.jsonl").is_file()):
        evaluate = EvaluateConfig(
            out=out, ref_model=ref, qsharp_model=str(model), etas=(eta,), num_samples=cfg.evaluate.num_samples,
            max_prompts=n_prompts, **decode_fields(cfg),
        )  # fmt: skip
        run_evaluate(evaluate, task=task)
    return json.loads(results.read_text())[0]


def run_ablations(opts: Ablations) -> list[dict[str, Any]]:
    cfg, task, ref = open_run(opts.run)
    if cfg.rounds < 2 or opts.rounds not in (1, 2):
        raise UserError("the ablations compare 1 and 2 rounds: they need a 2-round run and --rounds 1 or 2")
    folder, other = opts.run / "ablations", 3 - opts.rounds
    models = {
        f"Q♯ as run, {rounds_name(opts.rounds)}": opts.run / f"round-{opts.rounds}" / "qsharp" / "model",
        rounds_name(other): opts.run / f"round-{other}" / "qsharp" / "model",
    }
    for name, changes in variants(cfg).items():
        print(f"ablation: {name}")
        models[name] = train_variant(cfg, ref, folder / f"{slug(name)}-r{opts.rounds}", changes, opts.rounds)
    n_prompts = opts.max_prompts or cfg.evaluate.max_prompts
    evals, rows = folder / f"eval-eta{opts.eta:g}-prompts-{n_prompts or 'all'}", []
    for name, model in models.items():
        if not (model / "qsharp_value.json").is_file():
            raise UserError(f"{model} is missing: finish the pipeline run first")
        print(f"ablation: evaluate {name}")
        row = evaluate_model(cfg, task, ref, model, evals / slug(name), opts.eta, n_prompts)
        rows.append({"variant": name, **{k: row[k] for k in ("eta", "pass@1", "pass@1_se", "maj@n", "pass@n", "kl")}})
    per_prompt = {row["variant"]: load_prompt_rewards(evals / slug(row["variant"]), "qsharp", opts.eta) for row in rows}
    prompts = sorted(per_prompt[rows[0]["variant"]])  # every variant drew the same prompts with the same noise
    base = torch.tensor([per_prompt[rows[0]["variant"]][p] for p in prompts])
    for row in rows:
        mine = torch.tensor([per_prompt[row["variant"]][p] for p in prompts])
        row["delta"], row["delta_se"] = paired_gain(mine, base)
    write_json(folder / "ablations.json", rows)
    samples = cfg.evaluate.num_samples
    header = (f"# Ablations at η = {opts.eta:g}: {n_prompts or 'all'} evaluation prompts × {samples} samples, "
              "the same noise for every variant; delta ± paired SE against the first row\n\n")  # fmt: skip
    columns = ["variant", "pass@1", "pass@1_se", "delta", "delta_se", "kl", "maj@n", "pass@n"]
    atomic_write_text(folder / "ablations.md", header + markdown_table(rows, columns))
    return rows


def auc_by_step(expected, outcome: list[bool], steps: list, prefixes: list) -> list[dict[str, Any]]:
    """Pooled and within-prompt ROC-AUC over all targets, then at each completion step, with how many prompts
    give within-prompt pairs (pooled is the one to read when every prompt has one sample, as on the star graph)."""
    rows = []
    for step in ["all", *sorted({k for _, k in steps})]:
        at = [i for i, (_, k) in enumerate(steps) if step in ("all", k)]
        outcomes_of: dict[str, set[bool]] = {}
        for i in at:
            outcomes_of.setdefault(steps[i][0], set()).add(outcome[i])
        auc = M.within_group_roc_auc(
            expected[at], [outcome[i] for i in at], [steps[i] for i in at], [prefixes[i] for i in at]
        )
        pooled = M.roc_auc(expected[at], [outcome[i] for i in at])
        rows.append({
            "step": step, "roc_auc": pooled, "within_prompt_auc": auc, "positions": len(at),
            "prompts": len(outcomes_of), "mixed_prompts": sum(len(seen) == 2 for seen in outcomes_of.values()),
        })  # fmt: skip
    return rows


def run_steps(opts: Steps) -> list[dict[str, Any]]:
    rows = []
    for folder in opts.models:
        cfg, model, held_out = finished_run(folder)
        expected, rewards, _ = predict_targets(model, held_out, cfg, resolve_device(cfg.device))
        outcome = (rewards > (cfg.v_min + cfg.v_max) / 2).tolist()
        steps, prefixes = target_prefixes(held_out, model.is_q_type, cfg.prefix_extension)
        rows += [{"model": str(folder), **row} for row in auc_by_step(expected, outcome, steps, prefixes)]
    write_json(opts.out / "steps.json", rows)
    header = "# Held-out ROC-AUC, pooled and within prompts, by completion step (completion tokens in the prefix)\n\n"
    columns = ["model", "step", "roc_auc", "within_prompt_auc", "mixed_prompts", "prompts", "positions"]
    atomic_write_text(opts.out / "steps.md", header + markdown_table(rows, columns))
    return rows


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def main(argv: list[str] | None = None) -> None:
    opts = tyro.extras.subcommand_cli_from_dict(
        {"sweep": Sweep, "ablations": Ablations, "steps": Steps}, args=sys.argv[1:] if argv is None else argv,
        description=__doc__.split("\n\n")[0],
    )  # fmt: skip
    try:
        run = {Sweep: run_sweep, Ablations: run_ablations, Steps: run_steps}[type(opts)]
        rows = run(opts)
    except UserError as err:
        sys.exit(f"error: {err}")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

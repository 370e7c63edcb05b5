"""What a training run tells people: the one line at its end and its training-curve plot.

Why it exists: both read a run's records only (metrics.jsonl's lines, the final metrics), never a model or its
data, and more than the loop uses them: the CLI, the pipeline and train_value_model print the same line.

It knows the names of the metrics the loop records; it knows nothing of models, data or checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from qsharp_ext.plots import save_figure


def mean_train_loss(records: list[dict[str, Any]]) -> float | None:
    """Mean train loss over the steps since the evaluation before the last record."""
    previous_eval = max((i for i, r in enumerate(records[:-1]) if "eval_loss" in r), default=-1)
    losses = [r["train_loss"] for r in records[previous_eval + 1 :] if "train_loss" in r]
    return sum(losses) / len(losses) if losses else None


def summary_line(metrics: dict[str, Any]) -> str:
    """One line for the end of a run: held-out quality and where the model is."""

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    held_out = (
        f"held-out loss {fmt('eval_loss')} (constant {fmt('constant_loss')}), ROC-AUC {fmt('roc_auc')} "
        f"(within prompts {fmt('within_prompt_auc')}), ECE {fmt('ece')}, accuracy {fmt('accuracy')} "
        f"({metrics['eval_trajectories']} trajectories, {metrics['eval_positions']} positions)"
        if metrics.get("eval_trajectories")
        else "no held-out prompts"
    )
    line = (
        f"{metrics['step']} steps on {metrics['train_trajectories']} trajectories, train loss {fmt('train_loss')}; "
        f"{held_out}; value model in {metrics['model']}"
    )
    if no_better_than_constant(metrics):
        line += (
            "\nwarning: the held-out loss is no lower than a constant prediction's: the value model predicts the "
            "rewards of new prompts no better than their mean (memorised training prompts? more distinct prompts help)"
        )
    return line


def no_better_than_constant(metrics: dict[str, Any]) -> bool:
    """Held-out loss at or above the best constant prediction's (False when either is unknown)."""
    loss, constant = metrics.get("eval_loss"), metrics.get("constant_loss")
    return loss is not None and constant is not None and loss >= constant


# ----------------------------------------------------------------------------------------------- plots


def training_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Train and held-out loss (left) and held-out ROC-AUC, pooled and within prompts (right), written atomically."""
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    held = [r for r in records if r.get("eval_loss") is not None]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train, strict=True), color="tab:blue", alpha=0.5, linewidth=1, label="train (per step)")
    if held:
        steps, losses = [r["step"] for r in held], [r["eval_loss"] for r in held]
        ax_loss.plot(steps, losses, "o-", color="tab:orange", label="held out")
    aucs = (("roc_auc", "pooled", "tab:green"), ("within_prompt_auc", "within prompts", "tab:purple"))
    for key, label, color in aucs:
        points = [(r["step"], r[key]) for r in held if r.get(key) is not None]
        if points:
            ax_auc.plot(*zip(*points, strict=True), "o-", color=color, label=label)
    ax_auc.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax_loss.set(xlabel="step", ylabel="loss", title="Value-model loss")
    ax_auc.set(xlabel="step", ylabel="ROC-AUC", title="Held-out ROC-AUC", ylim=(0.0, 1.02))
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    save_figure(fig, path, dpi=110)

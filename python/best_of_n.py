"""Which score of a finished answer makes the value model a best-of-n verifier: the rules side by side.

    python python/best_of_n.py --evaluation runs/eval --out runs/best-of-n

An evaluation run with a value model (`qsharp-ext evaluate ... --qsharp-model M`) keeps, for every sample, the
model's predicted final reward after each completion token (`token_values` in samples.jsonl). This program
folds them into one score per answer by every rule of `qsharp_ext.verifier` (the value once the answer is
written, the mean over its tokens, the lowest) and reports, per (method, η) row of the evaluation and rule:
best-of-n (the reward of the answer with the highest score), its gain over a random sample of the same
prompt ± the paired SE over prompts, the within-prompt ROC-AUC of the scores (does the rule rank a prompt's
right answers above its wrong ones), beside majority vote and pass@n. Nothing is sampled or run again.
Output: OUT/best_of_n.json, best_of_n.md and best_of_n.png.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import tyro

from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import summarize
from qsharp_ext.io import atomic_write_text, check_output_folder, markdown_table, write_json
from qsharp_ext.plots import save_figure
from qsharp_ext.tasks import build_task
from qsharp_ext.verifier import SCORE_RULES, answer_score

COLUMNS = ["method", "eta", "rule", "pass@1", "bon_value", "bon_gain", "bon_gain_se", "value_auc", "maj@n", "pass@n"]


@dataclasses.dataclass
class Config:
    """Compare best-of-n scoring rules on one evaluation's samples."""

    evaluation: Path
    """An evaluation folder (results.json, samples.jsonl, evaluate_config.json) run with a value model."""
    out: Path
    """Folder for best_of_n.json, best_of_n.md and best_of_n.png."""


def load_rows(evaluation: Path) -> tuple[dict[str, Any], dict[tuple[str, float | None], list[dict]]]:
    """The evaluation's settings and its samples grouped by (method, η), prompt by prompt as written."""
    settings_path, samples_path = evaluation / "evaluate_config.json", evaluation / "samples.jsonl"
    for path in (settings_path, samples_path):
        if not path.is_file():
            raise UserError(f"{path} is missing: --evaluation must be a finished `qsharp-ext evaluate` folder")
    groups: dict[tuple[str, float | None], list[dict]] = {}
    with samples_path.open() as lines:
        for line in lines:
            record = json.loads(line)
            groups.setdefault((record["method"], record["eta"]), []).append(record)
    if not any("token_values" in r for rs in groups.values() for r in rs):
        raise UserError(f"{samples_path} holds no token values: evaluate with --qsharp-model or --cd-model")
    return json.loads(settings_path.read_text()), groups


def compare(evaluation: Path) -> list[dict[str, Any]]:
    """One row per (method, η, rule)."""
    settings, groups = load_rows(evaluation)
    task = build_task(settings["task"], settings["task_options"])
    equal = getattr(task, "answers_equal", lambda a, b: a == b)
    rows = []
    for (method, eta), records in groups.items():
        samples = {key: [r[key] for r in records] for key in ("reward", "answer", "kl")} | {"tok_s": 0.0}
        for rule in SCORE_RULES:
            scores = [answer_score(r["token_values"], rule) for r in records]
            row = summarize(method, eta, samples | {"value": scores}, settings["num_samples"], equal, task.v_max)
            rows.append({"method": method, "eta": eta, "rule": rule} | {k: row[k] for k in COLUMNS[3:]})
    return rows


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Best-of-n by each rule against a random sample (pass@1) and majority vote, one group per row."""
    labels = sorted({(r["method"], r["eta"]) for r in rows}, key=lambda k: (k[0] != "pi_ref", k[0], -(k[1] or 0)))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(labels), 3.6))
    bars = ["random sample", "majority", *(f"best-of-n: {rule}" for rule in SCORE_RULES)]
    width = 0.8 / len(bars)
    for i, (method, eta) in enumerate(labels):
        mine = {r["rule"]: r for r in rows if (r["method"], r["eta"]) == (method, eta)}
        first = mine[SCORE_RULES[0]]
        heights = [first["pass@1"], first["maj@n"], *(mine[rule]["bon_value"] for rule in SCORE_RULES)]
        errors = [0.0, 0.0, *(mine[rule]["bon_gain_se"] for rule in SCORE_RULES)]
        for j, (height, error) in enumerate(zip(heights, errors, strict=True)):
            ax.bar(i + (j - (len(bars) - 1) / 2) * width, height, width, yerr=error, color=f"C{j}",
                   label=bars[j] if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(labels)), [m if e is None else f"{m} η={e:g}" for m, e in labels])
    ax.set_ylabel("mean reward")
    ax.set_title("Best-of-n by the value model; error bars: paired SE against a random sample", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    check_output_folder(cfg.out)
    rows = compare(cfg.evaluation)
    cfg.out.mkdir(parents=True, exist_ok=True)
    header = f"# Best-of-n scoring rules on {cfg.evaluation}\n\n"
    atomic_write_text(cfg.out / "best_of_n.md", header + markdown_table(rows, COLUMNS))
    chart(rows, cfg.out / "best_of_n.png")
    write_json(cfg.out / "best_of_n.json", rows)
    print((cfg.out / "best_of_n.md").read_text())


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        sys.exit(f"error: {error}")

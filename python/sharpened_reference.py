"""The sharpening baseline: π_ref at a lower temperature, sampled and scored by the same engine as Q♯.

    python python/sharpened_reference.py model --ref-model MODEL --out runs/sharpened-model
    qsharp-ext evaluate ... --cd-model runs/sharpened-model --etas 2.4 0.8 \
        --out runs/eval-sharpened                                       # T' 0.6 and 0.4 at T 0.8
    python python/sharpened_reference.py compare --evaluation runs/eval-qsharp --sharpened runs/eval-sharpened \
        --out runs/comparison

A value model whose guidance does nothing but sharpen π_ref tells whether a Q♯ gain is more than "sample
π_ref's likely tokens more often". This program writes one: all of π_ref's layers and a Q-type mean head
equal to π_ref's LM head, so that E[z](y) is π_ref's logit of y. Controlled-decoding guidance at η then
samples π ∝ π_ref · exp(E[z]/η), that is softmax(logit · (1/T + 1/η)) over the top-k candidates: π_ref at
temperature T' with 1/T' = 1/T + 1/η (η = 1 / (1/T' − 1/T)). Non-candidates keep the floor offset 0 and
π_ref's logits are tens of nats, so they are left out in practice. The evaluation's rows are then paired
with π_ref's sample by sample and carry the exact KL(π‖π_ref) of the same engine. The rows are labelled
`cd` by `evaluate`; they are this baseline, not a trained CD model. `compare` puts them beside another
evaluation of the same prompts, seed and batches (its π_ref row and value-guided rows): every sharpened row
gets its gain over that π_ref ± the paired SE → OUT/{comparison.json, comparison.md, comparison.png}.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
import tyro

from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import load_prompt_rewards, paired_gain
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.loading import load_reference
from qsharp_ext.plots import accuracy_kl_plot
from qsharp_ext.value_model import ValueModel, lm_head_weights

SHARPENED_STYLE = ("π_ref, lower T", "tab:gray", "^")  # the rows of π_ref sampled at a lower temperature


@dataclasses.dataclass
class Model:
    """Write a value model whose CD guidance at η is π_ref at temperature 1 / (1/T + 1/η)."""

    ref_model: str
    """π_ref: a local folder or a Hugging Face model id."""
    out: Path
    """Folder of the value model (a saved ValueModel, for `evaluate --cd-model`)."""
    temperature: float = 0.8
    """π_ref's sampling temperature in the evaluation."""
    sharpened: tuple[float, ...] = (0.6, 0.4, 0.2)
    """Lower temperatures to print the η of."""


def sharpening_model(ref_model, tokenizer) -> ValueModel:
    """All of π_ref's layers plus a Q-type mean head that outputs π_ref's own logits."""
    layers = ref_model.config.num_hidden_layers
    model = ValueModel.from_reference(ref_model, layers, tokenizer, kind="mean", parameterization="q")
    weight, bias = lm_head_weights(ref_model, model.head)
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    return model.eval()


def eta_for_temperature(temperature: float, sharpened: float) -> float:
    """η at which the sharpening model samples at `sharpened` when π_ref samples at `temperature`."""
    if not 0 < sharpened < temperature:
        raise UserError(f"the sharpened temperature must lie in (0, {temperature}), got {sharpened}")
    return 1.0 / (1.0 / sharpened - 1.0 / temperature)


@dataclasses.dataclass
class Compare:
    """The sharpened rows beside another evaluation's rows, with paired gains over its π_ref."""

    evaluation: Path
    """An evaluation folder with a π_ref row (results.json, samples.jsonl)."""
    sharpened: Path
    """The evaluation of the sharpening model (`--cd-model`), same prompts, seed and prompts_per_batch."""
    out: Path
    """Where comparison.json, comparison.md and comparison.png go."""
    temperature: float = 0.8
    """π_ref's sampling temperature in both evaluations (to name each sharpened row's temperature)."""


def read_rows(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: give an evaluation folder")
    return json.loads(path.read_text())


def run_model(opts: Model) -> str:
    ref_model, tokenizer = load_reference(opts.ref_model, device="cpu")
    etas = [eta_for_temperature(opts.temperature, t) for t in opts.sharpened]
    sharpening_model(ref_model, tokenizer).save_pretrained(opts.out, tokenizer)
    flags = " ".join(f"{eta:.4g}" for eta in etas)
    return f"wrote {opts.out}; at T {opts.temperature}, evaluate with --cd-model {opts.out} --etas {flags} for T' " + (
        " ".join(map(str, opts.sharpened))
    )


def run_compare(opts: Compare) -> str:
    rows = read_rows(opts.evaluation)
    reference = load_prompt_rewards(opts.evaluation, "pi_ref", None)  # refused when it has no π_ref row
    for row in read_rows(opts.sharpened):
        if row["method"] != "cd":
            continue
        rewards = load_prompt_rewards(opts.sharpened, "cd", row["eta"])
        if rewards.keys() != reference.keys():
            raise UserError("the two evaluations did not sample the same prompts: they cannot be paired")
        ids = sorted(reference)
        gain, gain_se = paired_gain(torch.tensor([rewards[i] for i in ids]), torch.tensor([reference[i] for i in ids]))
        sharpened_t = 1.0 / (1.0 / opts.temperature + 1.0 / row["eta"])
        rows.append({**row, "method": "sharpened", "temperature": sharpened_t, "gain": gain, "gain_se": gain_se})
    write_json(opts.out / "comparison.json", rows)
    columns = ["method", "eta", "temperature", "pass@1", "pass@1_se", "gain", "gain_se", "maj@n", "pass@n", "kl"]
    header = f"# {opts.evaluation} beside π_ref sharpened ({opts.sharpened}); gains paired with π_ref's samples\n\n"
    atomic_write_text(opts.out / "comparison.md", header + markdown_table(rows, columns))
    title = "Guided rows against π_ref at a lower temperature"
    accuracy_kl_plot(rows, opts.out / "comparison.png", "pass@1", title, {"sharpened": SHARPENED_STYLE})
    return markdown_table(rows, columns)


def main(argv: list[str] | None = None) -> None:
    opts = tyro.extras.subcommand_cli_from_dict(
        {"model": Model, "compare": Compare}, args=sys.argv[1:] if argv is None else argv,
        description=__doc__.split("\n\n")[0],
    )  # fmt: skip
    try:
        print(run_model(opts) if isinstance(opts, Model) else run_compare(opts))
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

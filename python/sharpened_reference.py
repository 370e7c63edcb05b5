"""The sharpening baseline: π_ref at a lower temperature, sampled and scored by the same engine as Q♯.

    python python/sharpened_reference.py --ref-model MODEL --out runs/sharpened-model
    qsharp-ext evaluate ... --cd-model runs/sharpened-model --etas 2.4 0.8 0.267    # T' 0.6, 0.4, 0.2 at T 0.8

A value model whose guidance does nothing but sharpen π_ref tells whether a Q♯ gain is more than "sample
π_ref's likely tokens more often". This program writes one: all of π_ref's layers and a Q-type mean head
equal to π_ref's LM head, so that E[z](y) is π_ref's logit of y. Controlled-decoding guidance at η then
samples π ∝ π_ref · exp(E[z]/η), that is softmax(logit · (1/T + 1/η)) over the top-k candidates: π_ref at
temperature T' with 1/T' = 1/T + 1/η (η = 1 / (1/T' − 1/T)). Non-candidates keep the floor offset 0 and
π_ref's logits are tens of nats, so they are left out in practice. The evaluation's rows are then paired
with π_ref's sample by sample and carry the exact KL(π‖π_ref) of the same engine. The rows are labelled
`cd` by `evaluate`; they are this baseline, not a trained CD model.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import tyro

from qsharp_ext.errors import UserError
from qsharp_ext.loading import load_reference
from qsharp_ext.value_model import ValueModel


@dataclasses.dataclass
class Sharpened:
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
    lm_head = ref_model.get_output_embeddings()
    if lm_head is None or lm_head.weight.shape != model.head.weight.shape:
        raise UserError("π_ref has no LM head of shape (vocabulary, hidden)")
    with torch.no_grad():
        model.head.weight.copy_(lm_head.weight)
        bias = getattr(lm_head, "bias", None)
        model.head.bias.copy_(bias if bias is not None else torch.zeros_like(model.head.bias))
    return model.eval()


def eta_for_temperature(temperature: float, sharpened: float) -> float:
    """η at which the sharpening model samples at `sharpened` when π_ref samples at `temperature`."""
    if not 0 < sharpened < temperature:
        raise UserError(f"the sharpened temperature must lie in (0, {temperature}), got {sharpened}")
    return 1.0 / (1.0 / sharpened - 1.0 / temperature)


def main(argv: list[str] | None = None) -> None:
    opts = tyro.cli(Sharpened, args=sys.argv[1:] if argv is None else argv, description=__doc__.split("\n\n")[0])
    try:
        ref_model, tokenizer = load_reference(opts.ref_model, device="cpu")
        etas = [eta_for_temperature(opts.temperature, t) for t in opts.sharpened]
        sharpening_model(ref_model, tokenizer).save_pretrained(opts.out, tokenizer)
    except UserError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {opts.out}; at T {opts.temperature}, evaluate with --cd-model {opts.out} --etas", end="")
    print("".join(f" {eta:.4g}" for eta in etas), f"for T' {' '.join(map(str, opts.sharpened))}")


if __name__ == "__main__":
    main()

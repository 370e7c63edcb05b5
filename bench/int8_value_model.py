"""Would an int8 value model make V-type guidance cheap enough on the CPU, and what would it cost the policy?

    python bench/int8_value_model.py --out bench/results

The V-type value model's candidate pass is compute-bound on the CPU (its GEMMs run k + 1 rows per sequence), so
int8 GEMMs are the obvious lever. This script quantizes the value model's linear layers with PyTorch's dynamic
int8 quantization (fbgemm: int8 weights, each input's activations quantized with one scale per call) and
measures both sides within one run, on decode_speed.py's π_ref and prompts:

- speed: tokens/s of plain decoding, V-type guidance with the float32 value model and with its int8 copy;
- policy: the exact per-step KL(π_float32 ‖ π_int8) between the two guided policies, on the same prefixes
  (π_ref samples guided by the float32 model; both policies computed at every step by QSharpLogitsProcessor),
  at each η, and its sum over a sequence; beside it the guidance's own size, KL(π_float32 ‖ π_ref), on the same
  steps.

Writes DIR/int8_value_model.json and DIR/int8_value_model.md. No trained V-type model ships with SmolLM2, so the
value model is π_ref's first layers under an untrained head: by default at torch.nn.Linear's scale
(`--head-init linear`), whose logits vary across candidates as a trained head's may; the default training start
(`fresh`, weights 0.02/√H) has almost constant logits, so int8 noise can hardly move it. A Bernoulli head's
log-offset moves by at most its logit's error (d offset / d logit ∈ [0, 1]) whatever η: the shift comes from
how much the int8 features move the head's logits.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import warnings
from pathlib import Path
from typing import Literal

import torch
from decode_speed import PROMPTS, reference_model, tokens_per_second
from transformers import LogitsProcessor, LogitsProcessorList

from qsharp_ext.generate import guided_generate
from qsharp_ext.guidance import QSharpLogitsProcessor
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.value_model import ValueModel

KL_GUIDANCE = "guidance_kl_per_sequence_mean"


@dataclasses.dataclass
class Config:
    """Speed and policy shift of an int8 value model against its float32 original."""

    out: Path = Path("bench/results")
    """Folder for int8_value_model.json and int8_value_model.md."""
    batch: int = 16
    """Sequences decoded together in the speed runs."""
    new_tokens: int = 128
    """Tokens per sequence in the speed runs (no EOS stop)."""
    kl_batch: int = 8
    """Sequences on which the two policies are compared."""
    kl_tokens: int = 48
    """Steps compared per sequence."""
    etas: tuple[float, ...] = (0.1, 1.0)
    """Guidance strengths at which the policies are compared (speed runs use the first)."""
    value_layers: int = 6
    """Layers of π_ref in the V-type value model."""
    head_init: Literal["linear", "fresh"] = "linear"
    """The untrained head: at torch.nn.Linear's scale, or the small default training start."""
    top_k: int = 20
    """Candidates scored per step (k)."""
    threads: int = 2
    """Torch CPU threads."""
    repeats: int = 3
    """Speed runs per decoder, interleaved (each round times every decoder once); the median counts."""


# The int8 copies compared: every linear layer, or all but the MLPs' down projections, whose input
# (SiLU(gate) · up) has the outliers that one activation scale per call handles worst.
VARIANTS = {"vtype_int8": (), "vtype_int8_float_down_proj": ("down_proj",)}


def int8_copy(value_model: ValueModel, keep_float: tuple[str, ...] = ()) -> ValueModel:
    """The value model with its backbone's linear layers, except those whose names end in one of `keep_float`,
    replaced by dynamically quantized int8 ones."""
    quantized = copy.deepcopy(value_model)
    chosen = {
        name: torch.ao.quantization.default_dynamic_qconfig
        for name, module in quantized.backbone.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(keep_float)
    }
    with warnings.catch_warnings():  # torch.ao's eager quantization warns that it is moving to torchao
        warnings.simplefilter("ignore")
        quantized.backbone = torch.ao.quantization.quantize_dynamic(quantized.backbone, chosen, dtype=torch.qint8)
    return quantized


class PolicyGap(LogitsProcessor):
    """Applies `first`'s guided policy and records, per row, KL(π_first ‖ π_second) and KL(π_first ‖ π_ref) on
    the same prefix."""

    def __init__(self, first: QSharpLogitsProcessor, second: QSharpLogitsProcessor) -> None:
        self.first, self.second, self.kl, self.kl_ref = first, second, [], []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        a = self.first(input_ids, scores.clone()).log_softmax(-1)
        b = self.second(input_ids, scores.clone()).log_softmax(-1)
        for kl, other in ((self.kl, b), (self.kl_ref, scores.log_softmax(-1))):
            kl.append(torch.where(a.isfinite(), a.exp() * (a - other), 0.0).sum(-1))  # masked: no mass
        return a


def policy_gap(ref, tokenizer, prompts: list[str], first: ValueModel, second: ValueModel, eta: float, cfg: Config):
    """Per-step KL between the two value models' guided policies along samples of the first's."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    mask = batch["attention_mask"]
    gap = PolicyGap(*(QSharpLogitsProcessor(vm, eta, cfg.top_k, attention_mask=mask) for vm in (first, second)))
    with torch.no_grad():
        ref.generate(
            **batch, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=cfg.kl_tokens, min_new_tokens=cfg.kl_tokens,
            logits_processor=LogitsProcessorList([gap]), pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    steps, guidance = torch.stack(gap.kl, dim=1), torch.stack(gap.kl_ref, dim=1)  # (sequences, steps)
    return {
        "eta": eta, "kl_per_step_mean": steps.mean().item(), "kl_per_step_max": steps.max().item(),
        "kl_per_sequence_mean": steps.sum(1).mean().item(),
        KL_GUIDANCE: guidance.sum(1).mean().item(), "steps": steps.shape[1],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    import tyro

    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    ref, tokenizer, model_name = reference_model()
    vtype = ValueModel.from_reference(ref, cfg.value_layers, tokenizer, head_init=cfg.head_init).eval()
    models = {"plain": None, "vtype_float32": vtype} | {name: int8_copy(vtype, keep) for name, keep in VARIANTS.items()}

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(cfg.batch)]

    def decode(value_model: ValueModel | None):
        eta = None if value_model is None else cfg.etas[0]
        return lambda: guided_generate(
            ref, tokenizer, prompts, value_model, etas=(eta,), max_new_tokens=cfg.new_tokens, top_k=cfg.top_k,
            eos_token_id=[], seed=0,
        )  # fmt: skip

    decode(None)()  # warm-up: first-call allocations and thread pools
    timings = {name: [] for name in models}
    for _ in range(cfg.repeats):  # interleaved, so that a slow spell of a shared machine hits every decoder
        for name, vm in models.items():
            timings[name].append(tokens_per_second(decode(vm), cfg.batch * cfg.new_tokens))
    speed = {name: statistics.median(runs) for name, runs in timings.items()}
    ratios = {name: tok_s / speed["plain"] for name, tok_s in speed.items() if name != "plain"}
    print({k: round(v, 1) for k, v in speed.items()}, {k: round(v, 3) for k, v in ratios.items()})
    kl_prompts = [PROMPTS[i % len(PROMPTS)] for i in range(cfg.kl_batch)]
    rows = []
    for name in VARIANTS:
        for eta in cfg.etas:
            torch.manual_seed(0)  # the same samples for every variant
            rows.append({"int8": name, **policy_gap(ref, tokenizer, kl_prompts, vtype, models[name], eta, cfg)})
            print(rows[-1])
    meta = {"ref_model": model_name, **dataclasses.asdict(cfg), "out": str(cfg.out), "torch": torch.__version__}
    report = {"tok_s": speed, "over_plain": ratios, "tok_s_runs": timings, "kl": rows, "meta": meta}
    write_json(cfg.out / "int8_value_model.json", report)
    speed_rows = [{"run": k, "tok_s": v, "over_plain": v / speed["plain"]} for k, v in speed.items()]
    text = (
        f"# An int8 V-type value model ({model_name}, {cfg.value_layers} value layers, {cfg.head_init} head, "
        f"k = {cfg.top_k}, {cfg.threads} threads)\n\n"
        f"Speed: batch {cfg.batch}, {cfg.new_tokens} new tokens, η = {cfg.etas[0]}; the median of {cfg.repeats} "
        "interleaved runs.\n\n"
        + markdown_table(speed_rows, ["run", "tok_s", "over_plain"])
        + f"\nPolicy shift: KL(π_float32 ‖ π_int8) at every step of {cfg.kl_batch} sequences × {cfg.kl_tokens} "
        "steps sampled from π_float32, and the guidance's own KL(π_float32 ‖ π_ref) on the same steps.\n\n"
        + markdown_table(
            rows, ["int8", "eta", "kl_per_step_mean", "kl_per_step_max", "kl_per_sequence_mean", KL_GUIDANCE]
        )
    )
    atomic_write_text(cfg.out / "int8_value_model.md", text)
    print(text)


if __name__ == "__main__":
    main()

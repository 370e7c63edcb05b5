"""Per-step overhead of decoding: a tiny model (2 layers, width 64, batch 1), where overhead is all there is.

    python bench/step_overhead.py --out bench/results

Writes DIR/step_overhead.json and DIR/step_overhead.md: milliseconds per generated token of HF `generate`
(plain sampling), our plain decoding, Q♯ with a V-type, a Q-type and a shared-trunk value model, and plain and
V-type with `fixed_shapes` (decode_speed.py's decoders), each the median of `--repeats` runs, taken in turns so
that all see the same load. A model this small does almost no arithmetic, so the figures are the Python,
dispatch and kernel-launch cost of one step: what CUDA graphs would remove on a GPU, and what a guided step
adds to a plain one. Compare ratios, not milliseconds.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch
import tyro
from decode_speed import decoding_runs
from transformers import LlamaConfig, LlamaForCausalLM

from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.value_model import ValueModel
from qsharp_ext.wordlevel import word_level_tokenizer


@dataclasses.dataclass
class Config:
    """Per-step time of every decoder on a tiny model."""

    out: Path = Path("bench/results")
    """Folder for step_overhead.json and step_overhead.md."""
    new_tokens: int = 64
    """Tokens generated per run (no EOS stop)."""
    repeats: int = 7
    """Timed runs per decoder (the median is reported)."""
    layers: int = 2
    width: int = 64
    vocab: int = 1000
    top_k: int = 20
    threads: int = 1
    """Torch CPU threads (one: a tiny model's ops are too small to split)."""


def tiny_models(cfg: Config):
    config = LlamaConfig(
        vocab_size=cfg.vocab, hidden_size=cfg.width, intermediate_size=2 * cfg.width, num_hidden_layers=cfg.layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    ref = LlamaForCausalLM(config).eval()
    tokenizer = word_level_tokenizer([f"w{i}" for i in range(cfg.vocab - 3)])
    vtype = ValueModel.from_reference(ref, cfg.layers, tokenizer).eval()
    qtype = ValueModel.from_reference(ref, cfg.layers, tokenizer, parameterization="q").eval()
    shared = ValueModel.from_reference(ref, 0, tokenizer, parameterization="q", share_trunk=True).eval()
    return ref, tokenizer, vtype, qtype, shared


def main(argv: list[str] | None = None) -> dict:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    ref, tokenizer, vtype, qtype, shared = tiny_models(cfg)
    prompts = ["w1 w2 w3 w4 w5 w6 w7 w8"]
    runs = decoding_runs(ref, tokenizer, prompts, vtype, qtype, cfg.top_k, shared=shared, fixed_shapes=True)
    for fn in runs.values():
        fn(4)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(cfg.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(cfg.new_tokens)
            times[name].append((time.perf_counter() - start) / cfg.new_tokens * 1e3)
    ms = {name: statistics.median(t) for name, t in times.items()}
    hf = ms["hf_generate"]
    rows = [{"decoder": name, "ms_per_step": ms[name], "over_hf_generate": ms[name] / hf} for name in runs]
    result = {
        "ms_per_step": ms, "over_hf_generate": {name: ms[name] / hf for name in runs},
        "meta": {**dataclasses.asdict(cfg), "out": str(cfg.out), "torch": torch.__version__,
                 "machine": platform.processor() or platform.machine()},
    }  # fmt: skip
    write_json(cfg.out / "step_overhead.json", result)
    text = (
        f"# Per-step overhead (Llama {cfg.layers} layers × {cfg.width}, vocabulary {cfg.vocab}, batch 1, "
        f"{cfg.new_tokens} new tokens, k = {cfg.top_k}, {cfg.threads} thread, median of {cfg.repeats})\n\n"
        + markdown_table(rows, ["decoder", "ms_per_step", "over_hf_generate"])
    )
    atomic_write_text(cfg.out / "step_overhead.md", text)
    print(text)
    return result


if __name__ == "__main__":
    main()

"""A decoding step's cost with transformers' DynamicCache (concatenation) against ReservedCache (written in place).

    python bench/kv_cache.py --out bench/results

Writes DIR/kv_cache.json and DIR/kv_cache.md. π_ref of SmolLM2-135M's shape (random weights: the time is the
same), one prompt of `--context` tokens prefilled once and repeated to `--batch` rows (as guided_generate shares
a prompt's prefill among its samples), then one-token steps with each cache, alternating step by step so that
both see the same load. DynamicCache copies every layer's whole cache at each step, which grows with the context;
ReservedCache writes one position. Times are medians; compare the ratio, not the milliseconds.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch
import tyro
from decode_speed import random_reference, smollm2_config
from transformers import DynamicCache

from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.kv_cache import ReservedCache
from qsharp_ext.scoring import cache_kwarg


@dataclasses.dataclass
class Config:
    """Per-step time of π_ref with each KV cache, at several context lengths."""

    out: Path = Path("bench/results")
    """Folder for kv_cache.json and kv_cache.md."""
    contexts: tuple[int, ...] = (128, 512, 1536)
    """Prompt lengths (tokens) at which steps are timed."""
    batch: int = 16
    steps: int = 12
    """Timed steps per cache and context (after one warm-up step each)."""
    threads: int = 2


@torch.no_grad()
def step_times(ref, context: int, cfg: Config) -> dict[str, float]:
    """Median ms per one-token step of each cache, `context` tokens in."""
    prompt = torch.randint(0, ref.config.vocab_size, (1, context))
    caches = {"dynamic": DynamicCache(), "reserved": ReservedCache(context + cfg.steps + 1)}
    for cache in caches.values():
        ref(input_ids=prompt, **cache_kwarg(ref, cache))
        cache.batch_repeat_interleave(cfg.batch)
    times: dict[str, list[float]] = {name: [] for name in caches}
    token = torch.randint(0, ref.config.vocab_size, (cfg.batch, 1))
    for step in range(cfg.steps + 1):
        position = torch.full((cfg.batch, 1), context + step)
        for name, cache in caches.items():
            start = time.perf_counter()
            ref(input_ids=token, position_ids=position, **cache_kwarg(ref, cache))
            if step:  # the first step warms up
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    ref, _ = random_reference(smollm2_config())
    rows = []
    for context in cfg.contexts:
        ms = step_times(ref, context, cfg)
        rows.append({"context": context, "dynamic_ms": ms["dynamic"], "reserved_ms": ms["reserved"],
                     "speedup": ms["dynamic"] / ms["reserved"]})  # fmt: skip
        print(rows[-1], flush=True)
    meta = {**dataclasses.asdict(cfg), "out": str(cfg.out), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine()}  # fmt: skip
    write_json(cfg.out / "kv_cache.json", {"rows": rows, "meta": meta})
    text = (
        f"# One decoding step of π_ref (SmolLM2-135M shape, batch {cfg.batch}, {cfg.threads} threads): "
        f"DynamicCache vs ReservedCache, median of {cfg.steps} steps\n\n"
        + markdown_table(rows, ["context", "dynamic_ms", "reserved_ms", "speedup"])
    )
    atomic_write_text(cfg.out / "kv_cache.md", text)
    print(text)
    return {"rows": rows}


if __name__ == "__main__":
    main()

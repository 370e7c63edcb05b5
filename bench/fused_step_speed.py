"""Latency of one fused guided decoding step (candidate expansion + guided draw): compiled kernels vs torch.

    python bench/fused_step_speed.py --out bench/results

Writes DIR/kernels.json and DIR/kernels.md. One step = `expand_candidates` (top-k of π_ref at T = 1) plus
`guided_sample` (Bernoulli head, η = 0.1, top-p 1), at vocabularies of 49,152 (SmolLM2) and 128,256 (Llama 3),
k = 20, B ∈ {1, 16, 64}. The torch column is the pure-torch reference (the unfused composition over the full
(B, V)); cpp runs on the CPU with --threads threads; triton and cuda columns appear when a GPU is present.
Times are medians of repeated steps on this machine: compare the speedup column, not absolute numbers, across
machines.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch

from qsharp_ext import kernels
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.kernels import fused_step as FS

VOCABS = (49152, 128256)
BATCHES = (1, 16, 64)
K = 20


def median_ms(fn, repeats: int, sync: bool = False) -> float:
    fn()  # warm-up (and Triton compilation)
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def step(x: torch.Tensor, head_out: torch.Tensor, eta: torch.Tensor, noise: torch.Tensor, backend: str):
    """One decoding step through `backend` ("torch" is the reference composition)."""
    cand = FS.expand_candidates(x, 1.0, K, backend=backend)
    floor = torch.zeros_like(eta)  # a Bernoulli head's lowest reward is 0
    return FS.guided_sample(x, cand, head_out, "bernoulli", eta, 1.0, noise, floor=floor, backend=backend)


def bench_row(vocab: int, batch: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(vocab + batch)
    x = torch.randn(batch, vocab, generator=gen) * 3
    head_out = torch.randn(batch, K, generator=gen)
    eta, noise = torch.full((batch,), 0.1), torch.rand(batch, generator=gen)
    row = {"V": vocab, "batch": batch, "k": K}
    row["torch_ms"] = median_ms(lambda: step(x, head_out, eta, noise, "torch"), repeats)
    built = kernels.compiled_extension() is not None  # without _C (a failed build) only torch and triton run
    if built:
        row["cpp_ms"] = median_ms(lambda: step(x, head_out, eta, noise, "cpp"), repeats)
        row["speedup"] = row["torch_ms"] / row["cpp_ms"]
    if torch.cuda.is_available():
        gpu = [t.cuda() for t in (x, head_out, eta, noise)]
        row["torch_gpu_ms"] = median_ms(lambda: step(*gpu, "torch"), repeats, sync=True)
        row["triton_ms"] = median_ms(lambda: step(*gpu, "triton"), repeats, sync=True)
        if built and kernels.compiled_extension().has_cuda():
            row["cuda_ms"] = median_ms(lambda: step(*gpu, "cuda"), repeats, sync=True)
    return row


@dataclasses.dataclass
class Config:
    """Per-step latency of the fused guided step, every backend this machine has."""

    out: Path = Path("bench/results")
    """Folder for kernels.json and kernels.md."""
    threads: int = 2
    """Torch CPU threads (the cpp kernel uses them too)."""
    repeats: int = 20
    """Timed steps per cell (the median is reported)."""


def main(argv: list[str] | None = None) -> None:
    import tyro  # here, not at the top: bench/gpu_check.py imports this module on a GPU image without tyro

    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    if kernels.compiled_extension() is None:
        raise SystemExit("qsharp_ext._C is not built: install the package first")
    rows = [bench_row(vocab, batch, cfg.repeats) for vocab in VOCABS for batch in BATCHES]
    meta = {
        "machine": platform.processor() or platform.machine(),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    write_json(cfg.out / "kernels.json", {"meta": meta, "rows": rows})
    columns = list(rows[0])
    table = markdown_table(rows, columns)
    atomic_write_text(cfg.out / "kernels.md", f"# Fused guided step: per-step latency ({meta})\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()

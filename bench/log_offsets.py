"""Latency of the compiled log-offset kernels against the pure-torch reference.

    python bench/log_offsets.py --out bench/results

Writes DIR/log_offsets.json and DIR/log_offsets.md. Shapes are those of one decoding step: B rows × k
candidates (Bernoulli), and the same with a 51-atom histogram head. Times are medians of repeated calls
on this machine; compare the ratio column, not the absolute numbers, across machines.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch
import tyro

from qsharp_ext import distributions as D
from qsharp_ext import kernels
from qsharp_ext.io import atomic_write_text, markdown_table, write_json


def median_seconds(fn, repeats: int = 50) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclasses.dataclass
class Config:
    """Latency of the compiled log-offset kernels against torch."""

    out: Path = Path("bench/results")
    """Folder for log_offsets.json and log_offsets.md."""
    threads: int = 2
    """Torch CPU threads."""


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    if kernels.compiled_extension() is None:
        raise SystemExit("qsharp_ext._C is not built: install the package first")
    rows = []
    atoms = D.make_atoms(0.0, 1.0, 51)
    for batch in (1, 16, 64):
        for head in ("bernoulli", "histogram"):
            shape = (batch, 20) if head == "bernoulli" else (batch, 20, 51)
            x = torch.randn(*shape) * 5
            if head == "bernoulli":
                ref = median_seconds(lambda x=x: D.bernoulli_log_offset(x, 0.1))
                ext = median_seconds(lambda x=x: kernels.bernoulli_log_offset(x, 0.1, backend="cpp"))
            else:
                ref = median_seconds(lambda x=x: D.histogram_log_offset(x, atoms, 0.1))
                ext = median_seconds(lambda x=x: kernels.histogram_log_offset(x, atoms, 0.1, backend="cpp"))
            timing = {"torch_us": ref * 1e6, "cpp_us": ext * 1e6, "speedup": ref / ext}
            rows.append({"head": head, "batch": batch, "k": 20, **timing})
    meta = {"machine": platform.processor() or platform.machine(), "threads": cfg.threads, "torch": torch.__version__}
    write_json(cfg.out / "log_offsets.json", {"meta": meta, "rows": rows})
    table = markdown_table(rows, ["head", "batch", "k", "torch_us", "cpp_us", "speedup"])
    atomic_write_text(cfg.out / "log_offsets.md", f"# Log-offset kernels vs torch ({meta})\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()

"""Roll-outs per second of `collect` on Ray with 1 and 2 workers (and the local backend), on the smoke task.

    python bench/scale_rollouts.py --out bench/results

Writes DIR/scale_rollouts.json and DIR/scale_rollouts.md. The smoke recipe's round 1 (configs/smoke.yaml:
π_ref a tiny random Llama over 45 words, 16 samples per prompt, 6 new tokens, top_k 49) on `--prompts`
training prompts in shards of 8, and its round 2 (the roll-in guided by a value model made of π_ref's first
2 layers, η = 0.3). Ray runs on a local instance with as many CPUs as `--cpus`, one CPU per worker and
OMP_NUM_THREADS=1 in each; the local backend gets the same single thread. Times are whole `collect` runs
(actors start and load the models, then the shards) and include a check that every run wrote the same data.
On a machine shared with other work, compare the ratio within one run.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import tyro

from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.rollout_data import read_rollouts
from qsharp_ext.rollouts import CollectConfig, run_collect
from qsharp_ext.tasks import FirstTokenTask
from qsharp_ext.tasks.first_token import make_tiny_reference
from qsharp_ext.value_model import ValueModel


@dataclasses.dataclass
class Config:
    """`collect` on the local backend and on Ray with 1 and 2 workers."""

    out: Path = Path("bench/results")
    """Folder for scale_rollouts.json and scale_rollouts.md."""
    prompts: int = 128
    """Training prompts of the smoke task (in shards of 8), 16 samples each."""
    cpus: int = 2
    """CPUs of the local Ray instance (one per worker)."""


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=cfg.cpus, include_dashboard=False, log_to_driver=False)
    task = FirstTokenTask()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer, ref = task.tokenizer(), make_tiny_reference(task, seed=0)
        ref.save_pretrained(root / "ref")
        tokenizer.save_pretrained(root / "ref")
        ValueModel.from_reference(ref, 2, tokenizer).save_pretrained(root / "value", tokenizer)
        rounds = {1: {}, 2: {"value_model": str(root / "value"), "round": 2, "eta": 0.3}}
        for round_k, extra in rounds.items():
            reference = None
            for backend, workers in (("local", None), ("ray", 1), ("ray", 2)):
                out = root / f"round{round_k}-{backend}-{workers}"
                collect_cfg = CollectConfig(
                    out=out, ref_model=str(root / "ref"), samples_per_prompt=16, max_new_tokens=6, top_k=49,
                    prompts_per_shard=8, max_prompts=cfg.prompts, seed=0, device="cpu", backend=backend,
                    num_workers=workers, **extra,
                )  # fmt: skip
                start = time.perf_counter()
                run_collect(collect_cfg, task, progress=False)
                seconds = time.perf_counter() - start
                data = read_rollouts([out])
                reference = reference or data
                rows.append(
                    {
                        "round": round_k, "backend": backend, "workers": workers or 1, "rollouts": len(data),
                        "seconds": round(seconds, 2), "rollouts_per_s": round(len(data) / seconds, 1),
                        "same_data": data == reference,
                    }
                )  # fmt: skip
                print(rows[-1])
    ray.shutdown()
    for row in rows:
        one = next(r for r in rows if r["round"] == row["round"] and r["backend"] == "ray" and r["workers"] == 1)
        row["speedup_vs_1_worker"] = round(row["rollouts_per_s"] / one["rollouts_per_s"], 2)
    cfg.out.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": cfg.cpus, "machine": platform.machine(), "os_cpus": os.cpu_count(), "prompts": cfg.prompts}
    write_json(cfg.out / "scale_rollouts.json", {"settings": meta, "rows": rows})
    columns = ["round", "backend", "workers", "rollouts", "seconds", "rollouts_per_s", "speedup_vs_1_worker"]
    columns.append("same_data")
    header = (
        f"# collect on the smoke task: {cfg.prompts} prompts × 16 samples, Ray on {cfg.cpus} CPUs "
        f"({os.cpu_count()} on the machine)\n\n"
    )
    atomic_write_text(cfg.out / "scale_rollouts.md", header + markdown_table(rows, columns))


if __name__ == "__main__":
    main()

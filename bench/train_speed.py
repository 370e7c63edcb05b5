"""Value-model training throughput: prefix extension in one pass per trajectory vs one pass per prefix.

    python bench/train_speed.py --out bench/results

Writes DIR/train_speed.json and DIR/train_speed.md. Synthetic roll-outs of `--length` tokens (a 10%
prompt, the rest completion, switch step uniform over the completion) train a value model made from the
first 2 layers of a random 4-layer Llama. Both methods run the same training step (forward, backward,
AdamW) on the same trajectories:
- one pass: each trajectory once; every prefix from its switch step on is a target (train_batches.py);
- per prefix: each target prefix is its own sequence, scored at its last position, batched and padded.
The Markdown reports target positions trained per second, forward tokens per target (unpadded), and the
measured speed-up. Times are medians over a few steps on this machine: compare ratios across machines.
"""

from __future__ import annotations

import dataclasses
import platform
import random
import statistics
import time
from pathlib import Path

import torch
import tyro
from transformers import LlamaConfig, LlamaForCausalLM

from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.loading import resolve_device
from qsharp_ext.rollout_data import Rollout
from qsharp_ext.train_batches import collate
from qsharp_ext.training import TrainConfig, make_optimizer, train_step
from qsharp_ext.value_model import ValueModel

VOCAB = 512


def synthetic_rollouts(n: int, length: int, seed: int) -> list[Rollout]:
    """Random token roll-outs of `length` tokens with binary rewards; switch uniform over the completion."""
    rng = random.Random(seed)
    prompt_len = length // 10
    out = []
    for i in range(n):
        tokens = [rng.randrange(VOCAB) for _ in range(length)]
        switch, reward = rng.randrange(length - prompt_len), float(rng.random() < 0.5)
        out.append(Rollout(f"p{i}", 0, 1, None, seed, tokens[:prompt_len], tokens[prompt_len:], switch, reward))
    return out


def per_prefix_rollouts(rollouts: list[Rollout]) -> list[Rollout]:
    """Every target prefix of every roll-out as its own trajectory whose only target is its last position."""
    out = []
    for r in rollouts:
        for j in range(r.switch, len(r.completion_ids) + 1):
            out.append(Rollout(r.prompt_id, 0, 1, None, 0, r.prompt_ids, r.completion_ids[:j], j, r.reward))
    return out


def value_model(device: torch.device) -> ValueModel:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=1024,
    )  # fmt: skip
    return ValueModel.from_reference(LlamaForCausalLM(config), 2, kind="bernoulli").to(device)


def timed_step(model, optimizer, scheduler, cfg, batch, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_step(model, batch, optimizer, scheduler, cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_methods(streams: dict[str, list[Rollout]], batch_size: int, steps: int, device) -> dict[str, dict]:
    """Median seconds per training step and targets per step for each method; their steps alternate, so
    that both see the same load on a shared machine. Each method's first step warms up and is not timed."""
    # only the optimizer settings are used: no run folder, data or π_ref is read
    cfg = TrainConfig(out=Path(), data=(), ref_model="", steps=steps + 1, warmup_steps=0, device=str(device))
    setups = {name: (model := value_model(device), *make_optimizer(model, cfg)) for name in streams}
    times: dict[str, list[float]] = {name: [] for name in streams}
    positions: dict[str, list[int]] = {name: [] for name in streams}
    for step in range(steps + 1):
        for name, trajectories in streams.items():
            batch = collate(trajectories[step * batch_size : (step + 1) * batch_size], False, True)
            seconds = timed_step(*setups[name], cfg, batch, device)
            if step > 0:
                times[name].append(seconds)
                positions[name].append(batch.rewards.numel())
    return {
        name: {
            "step_ms": statistics.median(times[name]) * 1e3,
            "targets_per_step": statistics.mean(positions[name]),
            "targets_per_s": statistics.mean(positions[name]) / statistics.median(times[name]),
        }
        for name in streams
    }


@dataclasses.dataclass
class Config:
    """Value-model training throughput, one pass per trajectory against one pass per prefix."""

    out: Path = Path("bench/results")
    """Folder for train_speed.json and train_speed.md."""
    length: int = 200
    """Tokens per roll-out (prompt + completion)."""
    batch_size: int = 8
    """Trajectories (one pass) or prefixes (per prefix) per training step."""
    steps: int = 6
    """Timed steps per method (after one warm-up step)."""
    threads: int = 1
    """Torch CPU threads (1 is steadiest on a shared machine)."""
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto (the GPU when there is one)."""


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    rollouts = synthetic_rollouts(cfg.batch_size * (cfg.steps + 1), cfg.length, seed=0)
    prefixes = per_prefix_rollouts(rollouts)
    random.Random(1).shuffle(prefixes)
    timings = time_methods({"one_pass": rollouts, "per_prefix": prefixes}, cfg.batch_size, cfg.steps, device)
    one_pass, naive = timings["one_pass"], timings["per_prefix"]
    naive_tokens = sum(len(p.prompt_ids) + len(p.completion_ids) for p in prefixes) / len(prefixes)
    one_pass_tokens = cfg.length * len(rollouts) / len(prefixes)
    rows = [
        {"method": "one pass (prefix extension)", **one_pass, "forward_tokens_per_target": one_pass_tokens},
        {"method": "one pass per prefix", **naive, "forward_tokens_per_target": naive_tokens},
    ]
    ratios = {
        "forward_tokens_saved": naive_tokens / one_pass_tokens,
        "measured_speedup": one_pass["targets_per_s"] / naive["targets_per_s"],
        "targets_per_trajectory": len(prefixes) / len(rollouts),
    }
    meta = {
        "machine": platform.processor() or platform.machine(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "length": cfg.length,
        "batch_size": cfg.batch_size,
        "value_model": "Llama, 2 layers, hidden 256, vocab 512",
    }
    write_json(cfg.out / "train_speed.json", {"meta": meta, "ratios": ratios, "rows": rows})
    columns = ["method", "step_ms", "targets_per_step", "targets_per_s", "forward_tokens_per_target"]
    table = markdown_table(rows, columns)
    text = (
        f"# Value-model training: prefix extension vs one pass per prefix ({cfg.length}-token roll-outs)\n\n"
        f"{meta}\n\n{table}\n"
        f"Forward tokens saved by prefix extension: {ratios['forward_tokens_saved']:.1f}× "
        f"({ratios['targets_per_trajectory']:.1f} targets per trajectory); "
        f"measured training speed-up in target positions per second: {ratios['measured_speedup']:.1f}× "
        "(per-prefix batches are right-padded to their longest prefix, so they compute more than the unpadded "
        "token count).\n"
    )
    atomic_write_text(cfg.out / "train_speed.md", text)
    print(text)


if __name__ == "__main__":
    main()

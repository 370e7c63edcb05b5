"""Value-model training with each prompt packed once (pack_prompts) against one row per roll-out.

    python bench/packed_training.py --out bench/results

Writes DIR/packed_training.json and DIR/packed_training.md. The star graph's own training step at its real
sizes: a random π_ref of 4 layers × 128 (make_stargraph_reference), the value model its 4 layers + 2 fresh ones
with a V-type Bernoulli head, the task's future-token targets (K = path_len − 1), batches of 64 roll-outs, two per
graph (group_by_prompt), each answer path_len + 1 tokens. Both arms run the same training step (forward,
backward, AdamW) on the same batches, alternating, so that both see the same load on a shared machine; each
arm's first step warms up and is not timed. Times are medians: compare the ratio across machines, not the
milliseconds.
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

from qsharp_ext.future_tokens import FutureTokenHeads
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.rollout_data import Rollout
from qsharp_ext.tasks.stargraph import StarGraphTask, make_stargraph_reference
from qsharp_ext.train_batches import collate
from qsharp_ext.training import TrainConfig, make_optimizer, train_step
from qsharp_ext.value_model import ValueModel


def graph_rollouts(task: StarGraphTask, graphs: int, samples: int, seed: int) -> list[Rollout]:
    """`samples` roll-outs of each of `graphs` post-training graphs, a graph's roll-outs next to each other: random
    answers of path_len + 1 tokens (the time of a step does not depend on what they say)."""
    rng = random.Random(seed)
    tokenizer = task.tokenizer()
    out = []
    for problem in task.train_problems()[:graphs]:
        prompt = tokenizer(problem.prompt)["input_ids"]
        for s in range(samples):
            answer = [rng.randrange(task.n_labels) for _ in range(task.path_len)] + [tokenizer.eos_token_id]
            out.append(Rollout(problem.id, s, 1, None, seed, prompt, answer, 0, float(rng.random() < 0.5)))
    return out


def time_arms(task: StarGraphTask, rollouts: list[Rollout], cfg: Config) -> dict[str, dict]:
    """Median seconds per step and real (unpadded) tokens per step, unpacked and packed."""
    train = TrainConfig(out=Path(), data=(), ref_model="", steps=cfg.steps + 1, warmup_steps=0, lr=1e-3,
                        future_tokens=task.path_len - 1, future_targets="task", device="cpu")  # fmt: skip
    setups = {}
    for pack in (False, True):
        torch.manual_seed(0)
        ref = make_stargraph_reference(task, n_layers=cfg.ref_layers, hidden=cfg.ref_hidden)
        model = ValueModel.from_reference(ref, cfg.ref_layers, task.tokenizer(), "linear", cfg.extra_layers)
        heads = FutureTokenHeads(model.backbone.get_input_embeddings().weight.detach(), train.future_tokens)
        setups[pack] = (model, heads, *make_optimizer(model, train, heads))
    times: dict[bool, list[float]] = {False: [], True: []}
    tokens: dict[bool, list[int]] = {False: [], True: []}
    pad_id = task.tokenizer().pad_token_id
    for step in range(cfg.steps + 1):
        part = rollouts[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        for pack, (model, heads, optimizer, scheduler) in setups.items():
            batch = collate(part, False, True, pad_id, task.future_targets, train.future_tokens, None, pack)
            start = time.perf_counter()
            train_step(model, batch, optimizer, scheduler, train, torch.device("cpu"), None, heads)
            if step > 0:
                times[pack].append(time.perf_counter() - start)
                tokens[pack].append(int(batch.attention_mask.sum()))
    return {
        "packed" if pack else "one row per roll-out": {
            "step_ms": statistics.median(times[pack]) * 1e3,
            "tokens_per_step": statistics.mean(tokens[pack]),
        }
        for pack in (False, True)
    }


@dataclasses.dataclass
class Config:
    """Value-model training step time on the star graph, packed prompts against one row per roll-out."""

    out: Path = Path("bench/results")
    """Folder for packed_training.json and packed_training.md."""
    graphs: tuple[tuple[int, int], ...] = ((5, 5), (2, 5))
    """The (degree, path_len) of each star graph measured."""
    batch_size: int = 64
    """Roll-outs per training step (two per graph)."""
    steps: int = 12
    """Timed steps per arm (after one warm-up step)."""
    ref_layers: int = 4
    ref_hidden: int = 128
    extra_layers: int = 2
    threads: int = 2
    """Torch CPU threads (the star-graph runs use 2)."""


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    rows = []
    for degree, path_len in cfg.graphs:
        graphs = cfg.batch_size // 2 * (cfg.steps + 1)
        task = StarGraphTask(degree, path_len, n_pretrain=0, n_posttrain=graphs, n_test=0)
        arms = time_arms(task, graph_rollouts(task, graphs, 2, seed=0), cfg)
        plain, packed = arms["one row per roll-out"], arms["packed"]
        for name, arm in arms.items():
            rows.append({"graph": f"G({degree},{path_len})", "arm": name, **arm})
        rows[-1]["speedup"] = plain["step_ms"] / packed["step_ms"]
        rows[-1]["tokens_saved"] = 1 - packed["tokens_per_step"] / plain["tokens_per_step"]
    meta = {"machine": platform.processor() or platform.machine(), "threads": cfg.threads, "torch": torch.__version__}
    meta |= {
        "batch_size": cfg.batch_size,
        "value_model": f"{cfg.ref_layers} + {cfg.extra_layers} layers × {cfg.ref_hidden}",
    }
    write_json(cfg.out / "packed_training.json", {"rows": rows, "meta": meta})
    text = "# Value-model training: each graph packed once vs one row per roll-out (star graph)\n\n"
    columns = ("graph", "arm", "step_ms", "tokens_per_step", "speedup", "tokens_saved")
    text += f"{meta}\n\n" + markdown_table(rows, columns) + "\n"
    text += "\nspeedup = step time of one row per roll-out / packed; tokens_saved: real tokens per step not computed.\n"
    atomic_write_text(cfg.out / "packed_training.md", text)
    print(text)


if __name__ == "__main__":
    main()

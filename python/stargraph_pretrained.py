"""How many labelled walks a star-graph value model that starts from a *pretrained* causal LM needs per hop.

    python python/stargraph_pretrained.py --out runs/hops-smollm2                       # SmolLM2-135M-Instruct
    python python/stargraph_pretrained.py --future-tokens 4 --out runs/hops-smollm2-k4  # + future-token heads
    python python/stargraph_pretrained.py --model PATH --device cpu --out runs/hops-tiny  # any causal-LM folder

`stargraph_hops.py` measures this for value models trained from scratch on the task's own word-level
vocabulary. The paper's official code starts elsewhere: π_ref and the value classifier are both
pretrained GPT-2 small, whose attention already knows how to copy "the token that followed this one" out of
the context, the very lookup the value model must chain l − 2 times back from the goal. This script is that
faithful route, with SmolLM2-135M-Instruct (installed offline, `qsharp_ext.models.prepare_smollm2`) in
GPT-2's place.

Graphs are the task's G(d, l). Each node label is written as a word that the LM's tokenizer encodes as
one token after a space (the lowest-id lowercase words of its vocabulary) and the markers `|`, `/`, `=`
likewise, so the prompt keeps the task's layout, one token per word, in the LM's own tokens.

1. π_ref: a copy of the LM fine-tuned by next-token prediction on true paths (the path, then EOS). Its
   teacher-forced accuracy at the first step and at later nodes shows the Clever Hans shortcut: later nodes
   near 1 (follow the edge), the first step near 1/d (a guess).
2. The value model: `ValueModel.from_reference` on every layer of the pretrained LM (not π_ref), a Bernoulli
   head, BCE on walks down random arms of fresh graphs labelled 1 iff the arm ends at the goal (every node of
   the walk carries the label), optionally with the future-token auxiliary objective (`--future-tokens`).
   Its held-out accuracy per hop, as in `stargraph_hops.py` (how often the node h hops before the goal ranks
   the goal's arm first; l − 2 hops is the first step; chance 1/d), is reported at each `--report-at`
   number of training walks, until the last one or until `--time-budget-s` runs out.

Output: OUT/hops.json (settings, labels, π_ref's shortcut, the curve), hops.md (tables) and hops.png.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import stargraph_hops as hops
import stargraph_policy as policy
import torch
import torch.nn.functional as F
import tyro
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext.errors import UserError
from qsharp_ext.future_tokens import FutureTokenHeads, future_targets, future_token_loss
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.models import prepare_smollm2
from qsharp_ext.plots import save_figure
from qsharp_ext.tasks import StarGraphTask
from qsharp_ext.tasks.stargraph import ANSWER, EDGE_END, QUERY, StarGraph
from qsharp_ext.training import autocast, future_heads, lr_factor
from qsharp_ext.value_model import ValueModel

MARKS = (EDGE_END, QUERY, ANSWER)  # the task's word-level ids put these right after the labels, in this order


@dataclasses.dataclass
class PretrainedHopsConfig:
    """A value model from a pretrained LM, trained on exactly labelled walks; its accuracy per hop as it learns."""

    out: Path = Path("runs/stargraph-pretrained")
    """Folder for hops.json, hops.md and hops.png."""
    model: Path | None = None
    """A causal-LM folder with its tokenizer (Hugging Face format). Default: SmolLM2-135M-Instruct, prepared
    offline by `qsharp_ext.models.prepare_smollm2()`."""
    degree: int = 2
    """d: arms of the star."""
    path_len: int = 5
    """l: nodes from the source to the goal, both included (the first step is l − 2 hops from the goal)."""
    n_labels: int = 50
    """Node labels: this many words that the LM's tokenizer writes as one token after a space."""
    ref_steps: int = 300
    """π_ref's fine-tuning steps on true paths, each on `ref_batch` new graphs (0: skip π_ref)."""
    ref_batch: int = 64
    """Graphs per π_ref step."""
    ref_lr: float = 1e-4
    """π_ref's AdamW learning rate (20 steps of warm-up, then constant; no weight decay)."""
    batch: int = 256
    """Walks per value-model step (each on a new graph)."""
    lr: float = 2.5e-4
    """The value model's peak AdamW learning rate: linear warm-up, then cosine to 0 at the last --report-at."""
    weight_decay: float = 0.1
    """AdamW weight decay on the value model's weight matrices (biases and norm gains get none)."""
    warmup_steps: int = 100
    """Value-model steps of linear warm-up."""
    grad_clip: float = 1.0
    """Gradient-norm clip of every value-model step."""
    future_tokens: int = 0
    """K of the future-token auxiliary objective: at every node of the walk, heads also predict the walk's
    next 1 … K tokens (0: BCE alone; l − 1 covers the rest of every walk)."""
    future_weight: float = 1.0
    """λ: the auxiliary loss's weight beside BCE."""
    report_at: tuple[int, ...] = (100_000, 300_000, 1_000_000)
    """Numbers of training walks after which the held-out accuracy per hop is reported; training stops after
    the largest."""
    time_budget_s: float = 420.0
    """Wall-clock seconds for the whole run (loading and π_ref included): when the next evaluation would end
    past it, the value model stops and reports where it got."""
    n_held_out: int = 1024
    """Held-out graphs scored at each report (every arm of each), and for π_ref's accuracy."""
    eval_batch: int = 256
    """Graphs per forward pass when scoring π_ref (its logits span the whole vocabulary)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when a GPU is visible, else cpu."""
    bf16: bool = True
    """bfloat16 autocast on CUDA (weights and optimizer state stay float32); ignored on CPU."""
    seed: int = 0


@dataclasses.dataclass
class Vocab:
    """The task's words as the pretrained LM writes them, indexed by the task's word-level token id
    (labels 0 … N−1, then `|`, `/`, `=`): the word, and the LM token id it gets after a space."""

    tokenizer: PreTrainedTokenizerBase
    text: list[str]  # (N + 3,)
    ids: torch.Tensor  # (N + 3,)
    eos_id: int


class LMInput(torch.nn.Module):
    """A value model that reads the task's word-level ids (B, T), rewritten in the LM's tokens, so that
    `stargraph_hops.accuracy_by_hops` scores it unchanged."""

    def __init__(self, model: ValueModel, vocab: Vocab) -> None:
        super().__init__()
        self.model, self.vocab = model, vocab

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, object]:
        return self.model(lm_ids(self.vocab, ids.cpu()).to(ids.device), use_cache=False)


# ------------------------------------------------------------------------------------------ labels


def single_token(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    """The id of `word` after a space when that is exactly one known token, else None."""
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def label_words(tokenizer: PreTrainedTokenizerBase, n: int) -> dict[str, int]:
    """Up to `n` lowercase ASCII words of the vocabulary that are one token after a space, lowest ids first.

    Why lowest ids first: deterministic, and in a BPE vocabulary those are the single letters and the most
    frequent short words, which the LM has seen most often as separate words."""
    special = set(tokenizer.all_special_ids)
    found: dict[str, int] = {}
    for token_id in range(len(tokenizer)):
        word = tokenizer.decode([token_id]).strip()
        if token_id in special or word in found or not (word.isascii() and word.isalpha() and word.islower()):
            continue
        spaced = single_token(tokenizer, word)
        if spaced is not None:
            found[word] = spaced
            if len(found) == n:
                break
    return found


def make_vocab(tokenizer: PreTrainedTokenizerBase, task: StarGraphTask, where: object) -> Vocab:
    """The task's words in the LM's tokens; refused with one sentence when the tokenizer cannot write them."""
    labels = label_words(tokenizer, task.n_labels)
    if len(labels) < task.n_labels:
        raise UserError(
            f"the tokenizer of {where} has only {len(labels)} lowercase words that are one token after a space, "
            f"fewer than n_labels={task.n_labels}"
        )
    marks = {mark: single_token(tokenizer, mark) for mark in MARKS}
    if None in marks.values():
        missing = " ".join(m for m, i in marks.items() if i is None)
        raise UserError(f"the tokenizer of {where} does not write {missing} as one token after a space")
    if tokenizer.eos_token_id is None:
        raise UserError(f"the tokenizer of {where} has no EOS token, which ends π_ref's answers")
    assert task.tokenizer().convert_tokens_to_ids(list(MARKS)) == list(range(task.n_labels, task.n_labels + 3))
    vocab = Vocab(
        tokenizer, [*labels, *marks], torch.tensor([*labels.values(), *marks.values()]), tokenizer.eos_token_id
    )
    every_word = torch.arange(len(vocab.text))[None]  # (1, N + 3): each word once, in a row
    if encode(vocab, every_word) != vocab.ids[every_word].tolist():
        raise UserError(f"the tokenizer of {where} merges neighbouring words of a prompt into other tokens")
    return vocab


def encode(vocab: Vocab, task_ids: torch.Tensor) -> list[list[int]]:
    """The LM's tokenizer on the text of task ids (B, T): each row's words after a leading space."""
    texts = [" " + " ".join(vocab.text[i] for i in row) for row in task_ids.tolist()]
    return vocab.tokenizer(texts, add_special_tokens=False)["input_ids"]


def lm_ids(vocab: Vocab, task_ids: torch.Tensor) -> torch.Tensor:
    """Task ids (B, T) → the LM's ids (B, T) as its tokenizer writes the same words, one token per word."""
    encoded = encode(vocab, task_ids)
    assert encoded == vocab.ids[task_ids].tolist(), "the prompt lost its layout of one LM token per word"
    return torch.tensor(encoded)


# -------------------------------------------------------------------------------------------- π_ref


def answer_ids(vocab: Vocab, task: StarGraphTask, graphs: list[StarGraph]) -> torch.Tensor:
    """Prompt, true path and EOS in the LM's ids: (B, prompt_len + l + 1)."""
    prompts = task.tokenizer()([g.prompt() for g in graphs])["input_ids"]
    ids = lm_ids(vocab, torch.tensor([p + g.path() for p, g in zip(prompts, graphs, strict=True)]))
    return torch.cat([ids, torch.full((len(graphs), 1), vocab.eos_id)], 1)


def answer_logits(lm: PreTrainedModel, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """The logits that predict each answer token (source … EOS) from the true prefix: (B, l + 1, V)."""
    return lm(input_ids=ids, use_cache=False).logits[:, prompt_len - 1 : -1]


def fine_tune_reference(
    lm: PreTrainedModel, vocab: Vocab, task: StarGraphTask, cfg: PretrainedHopsConfig, device: torch.device
) -> list[dict]:
    """Next-token prediction on the answers of `ref_steps × ref_batch` new graphs, each seen once."""
    graphs = hops.draw(task, np.random.default_rng([cfg.seed, 3]), cfg.ref_steps * cfg.ref_batch)
    bf16 = use_bf16(cfg, device)

    def loss_of(batch: list[StarGraph]) -> tuple[torch.Tensor, dict]:
        ids = to_device(answer_ids(vocab, task, batch), device)  # (B, T)
        with autocast(device, bf16):
            logits = answer_logits(lm, ids, task.prompt_len)  # (B, l + 1, V)
        return F.cross_entropy(logits.float().flatten(0, 1), ids[:, task.prompt_len :].flatten()), {}

    return policy.optimise(
        lm, loss_of, graphs, steps=cfg.ref_steps, batch_size=cfg.ref_batch, lr=cfg.ref_lr, seed=cfg.seed,
        desc="π_ref", cosine=False,
    )  # fmt: skip


@torch.no_grad()
def reference_accuracy(
    lm: PreTrainedModel,
    vocab: Vocab,
    task: StarGraphTask,
    graphs: list[StarGraph],
    cfg: PretrainedHopsConfig,
    device: torch.device,
) -> dict:
    """π_ref's greedy accuracy at each answer position given the true prefix (teacher forcing)."""
    lm.eval()
    hits = []
    for start in range(0, len(graphs), cfg.eval_batch):
        ids = answer_ids(vocab, task, graphs[start : start + cfg.eval_batch]).to(device)  # (b, T)
        with autocast(device, use_bf16(cfg, device)):
            logits = answer_logits(lm, ids, task.prompt_len)  # (b, l + 1, V)
        hits.append((logits.argmax(-1) == ids[:, task.prompt_len :]).float().cpu())  # (b, l + 1)
    by_position = torch.cat(hits).mean(0).tolist()  # source, first step, …, goal, EOS
    later = by_position[2:-1]
    return {
        "source": by_position[0], "first_step": by_position[1],
        "later_nodes": float(np.mean(later)) if later else None, "eos": by_position[-1], "by_position": by_position,
    }  # fmt: skip


# -------------------------------------------------------------------------------------- value model


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: PretrainedHopsConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay on matrices only (decaying norm gains and biases only shrinks them), warm-up
    then cosine to 0 at `total_steps`."""
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    factor = functools.partial(lr_factor, warmup_steps=cfg.warmup_steps, total_steps=total_steps, schedule="cosine")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device`; on CUDA from pinned memory without blocking, since a plain copy waits for the GPU
    to finish its queue and so stops it from working while the CPU draws the next batch."""
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor.to(device)


def value_loss(
    model: ValueModel, heads: FutureTokenHeads | None, ids: torch.Tensor, labels: torch.Tensor, first_node: int,
    cfg: PretrainedHopsConfig,
) -> torch.Tensor:  # fmt: skip
    """BCE at every node of each walk (ids (B, T)) against its label (B,), plus λ × the future-token loss."""
    hidden = model.backbone(input_ids=ids, use_cache=False).last_hidden_state[:, first_node:]  # (B, nodes, H)
    head_out = model.head_outputs(hidden)  # (B, nodes)
    loss = model.loss(head_out, labels[:, None].expand_as(head_out))
    if heads is None:
        return loss
    nodes = torch.arange(first_node, ids.shape[1], device=ids.device)
    rows, cols = torch.meshgrid(torch.arange(ids.shape[0], device=ids.device), nodes, indexing="ij")  # (B, nodes)
    targets = future_targets(ids, torch.ones_like(ids), rows.flatten(), cols.flatten(), heads.k)  # (B·nodes, K)
    return loss + cfg.future_weight * future_token_loss(heads(hidden.flatten(0, 1)), targets)


def evaluate(
    model: ValueModel,
    vocab: Vocab,
    task: StarGraphTask,
    held_out: list[StarGraph],
    cfg: PretrainedHopsConfig,
    device: torch.device,
) -> dict[str, float]:
    """Held-out accuracy per hop (`stargraph_hops.accuracy_by_hops` on the LM's tokens), in eval mode."""
    model.eval()
    with autocast(device, use_bf16(cfg, device)):
        accuracy = hops.accuracy_by_hops(LMInput(model, vocab), task, held_out, str(device))
    model.train()
    return accuracy


def train_value_model(
    model: ValueModel,
    vocab: Vocab,
    task: StarGraphTask,
    cfg: PretrainedHopsConfig,
    device: torch.device,
    started: float,
) -> dict:
    """Steps on fresh walks, a held-out report at 0 walks and at each --report-at, within the time budget."""
    heads = future_heads(model, cfg)
    params = [*model.parameters(), *(heads.parameters() if heads is not None else ())]
    total = math.ceil(max(cfg.report_at) / cfg.batch)
    optimizer, schedule = make_optimizer(params, cfg, total)
    rng = np.random.default_rng([cfg.seed, 1])  # training walks; the held-out graphs come from their own stream
    held_out = hops.draw(task, np.random.default_rng([cfg.seed, 2]), cfg.n_held_out)
    pending, losses, bf16 = sorted(set(cfg.report_at)), [], use_bf16(cfg, device)
    start = time.perf_counter()
    curve = [point(0, 0, None, evaluate(model, vocab, task, held_out, cfg, device), start)]
    eval_s, stopped = curve[0]["seconds"], "last report point"
    model.train()
    for step in tqdm(range(1, total + 1), desc="value model", unit="step"):
        walks = hops.walks(task, hops.draw(task, rng, cfg.batch), rng.integers(task.degree, size=cfg.batch).tolist())
        ids, labels = to_device(lm_ids(vocab, walks.ids), device), to_device(walks.labels, device)  # (B, T), (B,)
        with autocast(device, bf16):
            loss = value_loss(model, heads, ids, labels, walks.first_node, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach())  # no .item(): the GPU keeps running ahead of the data on the CPU
        seen, out_of_time = step * cfg.batch, time.perf_counter() - started + eval_s >= cfg.time_budget_s
        if seen >= pending[0] or out_of_time:
            t = time.perf_counter()
            loss_mean = torch.stack(losses).float().mean().item()
            curve.append(point(step, seen, loss_mean, evaluate(model, vocab, task, held_out, cfg, device), start))
            tqdm.write(json.dumps(curve[-1]))
            eval_s, losses, pending = time.perf_counter() - t, [], [n for n in pending if n > seen]
            if out_of_time and pending:
                stopped = "time budget"
                break
    return {"curve": curve, "stopped": stopped, "steps_planned": total}


def point(step: int, seen: int, loss: float | None, accuracy: dict[str, float], start: float) -> dict:
    """One row of the curve; `seconds` counts from the value model's first step, evaluations included."""
    return {
        "sequences": seen, "step": step, "loss": loss, "accuracy_by_hops": accuracy,
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- run


def check_config(cfg: PretrainedHopsConfig) -> None:
    if not cfg.report_at or min(cfg.report_at) < 1:
        raise UserError("report_at needs at least one number of training walks, each at least 1")
    if min(cfg.batch, cfg.ref_batch, cfg.n_held_out, cfg.eval_batch) < 1:
        raise UserError("batch, ref_batch, n_held_out and eval_batch must be at least 1")
    if min(cfg.ref_steps, cfg.warmup_steps, cfg.future_tokens, cfg.future_weight, cfg.weight_decay) < 0:
        raise UserError("ref_steps, warmup_steps, future_tokens, future_weight and weight_decay must not be negative")
    if cfg.time_budget_s <= 0:
        raise UserError("time_budget_s must be positive")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def use_bf16(cfg: PretrainedHopsConfig, device: torch.device) -> bool:
    return cfg.bf16 and device.type == "cuda"


def load_lm(cfg: PretrainedHopsConfig) -> tuple[Path, PreTrainedModel, PreTrainedTokenizerBase]:
    """The pretrained LM (float32) and its tokenizer from --model, or SmolLM2-135M-Instruct prepared offline."""
    path = Path(cfg.model) if cfg.model is not None else prepare_smollm2()
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a causal-LM folder (it has no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"could not load a causal LM and its tokenizer from {path} ({first_line})") from None
    return path, lm, tokenizer


def run(cfg: PretrainedHopsConfig) -> dict:
    """π_ref's shortcut, then the value model's curve; writes hops.json, hops.md and hops.png to cfg.out."""
    started = time.perf_counter()
    check_config(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in float32
    task = StarGraphTask(cfg.degree, cfg.path_len, cfg.n_labels, n_pretrain=0, n_posttrain=0, n_test=0)
    path, lm, tokenizer = load_lm(cfg)
    vocab = make_vocab(tokenizer, task, path)
    torch.manual_seed(cfg.seed)
    model = ValueModel.from_reference(lm, lm.config.num_hidden_layers, tokenizer, "linear", kind="bernoulli")
    reference = None
    if cfg.ref_steps:  # π_ref: the loaded LM itself, fine-tuned; the value model holds its own copy of the weights
        records = fine_tune_reference(lm.to(device), vocab, task, cfg, device)
        held_out = hops.draw(task, np.random.default_rng([cfg.seed, 2]), cfg.n_held_out)
        reference = reference_accuracy(lm, vocab, task, held_out, cfg, device) | {
            "steps": cfg.ref_steps, "first_loss": records[0]["loss"], "last_loss": records[-1]["loss"],
        }  # fmt: skip
        tqdm.write(json.dumps({"pi_ref": reference}))
    del lm
    if device.type == "cuda":
        torch.cuda.empty_cache()
    trained = train_value_model(model.to(device), vocab, task, cfg, device, started)
    result = {
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), "model": str(path),
        "device": str(device), "bf16": use_bf16(cfg, device), "layers": model.backbone.config.num_hidden_layers,
        "labels": vocab.text[: cfg.n_labels], "chance": 1 / cfg.degree, "reference": reference, **trained,
        "total_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    report(result, cfg.out)
    return result


# ------------------------------------------------------------------------------------------- report


def title(result: dict) -> str:
    cfg = result["config"]
    objective = f"BCE + future tokens K={cfg['future_tokens']}" if cfg["future_tokens"] else "BCE"
    return (f"G({cfg['degree']}, {cfg['path_len']}): value model from {Path(result['model']).name} "
            f"({result['layers']} layers), {objective}, batch {cfg['batch']}, lr {cfg['lr']:g}")  # fmt: skip


def reference_section(reference: dict | None) -> str:
    if reference is None:
        return "π_ref was not fine-tuned (--ref-steps 0).\n"
    names = {"source": "source", "first_step": "first step", "later_nodes": "later nodes", "eos": "EOS"}
    row = {name: reference[key] for key, name in names.items()}
    return (f"π_ref: the LM fine-tuned {reference['steps']} steps on true paths; teacher-forced accuracy "
            f"(the shortcut: first step ≈ 1/d, later nodes ≈ 1).\n\n{markdown_table([row], list(row))}")  # fmt: skip


def report(result: dict, out: Path) -> None:
    """hops.json, hops.md (π_ref's shortcut and the per-hop table) and hops.png (accuracy vs walks)."""
    import matplotlib.pyplot as plt

    write_json(out / "hops.json", result)
    curve, hop_keys = result["curve"], list(result["curve"][0]["accuracy_by_hops"])
    rows = [
        {"sequences": r["sequences"], "step": r["step"], "seconds": r["seconds"], "loss": r["loss"]}
        | {hops.hops_label(h): r["accuracy_by_hops"][h] for h in hop_keys}
        for r in curve
    ]
    labels = " ".join(result["labels"])
    atomic_write_text(out / "hops.md", (
        f"# {title(result)}\n\nNode labels: `{labels}`.\n\n{reference_section(result['reference'])}\n"
        f"Value model: held-out accuracy per hop from the goal (chance {result['chance']:.2f}); seconds count from "
        f"its first step. Stopped at: {result['stopped']}.\n\n{markdown_table(rows, list(rows[0]))}"
    ))  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for h in hop_keys:
        ax.plot([r["sequences"] for r in curve], [r["accuracy_by_hops"][h] for r in curve], marker="o", ms=3,
                label=hops.hops_label(h))  # fmt: skip
    ax.axhline(result["chance"], ls="--", color="black", lw=1, label="chance")
    ax.set_xlabel("labelled walks seen")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title(result), fontsize=8)
    ax.legend(fontsize=8)
    save_figure(fig, out / "hops.png")


def main() -> None:
    cfg = tyro.cli(PretrainedHopsConfig, description=__doc__)
    try:
        run(cfg)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

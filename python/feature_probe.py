"""Linear probes of π_ref's frozen features: does a layer already tell a prompt's right answers from its wrong ones?

    python python/feature_probe.py --data runs/arith-wide/round-1/data --ref-model MODEL --layers 2 6 15 30 \
        --out runs/probe

For every roll-out, π_ref's hidden state after `step` completion tokens (-1: the whole completion) at each
layer in `layers`; a logistic regression (L2, L-BFGS, features standardized on the training prompts) per
layer, fitted on the roll-outs of the training prompts and scored on the held-out ones (split by prompt, as
training splits). Reported: pooled ROC-AUC (mostly which prompts are hard) and ROC-AUC within prompts, over
pairs of one prompt's samples with different prefixes (what guidance needs) → OUT/{probe.json, probe.md}.
A value model whose within-prompt figure sits well below the probe's has the information in its backbone
and fails to read it.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
import tyro
from tqdm import tqdm
from transformers import DynamicCache

from qsharp_ext import metrics as M
from qsharp_ext.errors import UserError
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.loading import load_reference
from qsharp_ext.rollout_data import Rollout, read_rollouts
from qsharp_ext.scoring import cache_kwarg
from qsharp_ext.train_batches import split_by_prompt


@dataclasses.dataclass
class Probe:
    """Logistic-regression probes of π_ref's hidden states, one per layer, scored within prompts."""

    data: tuple[Path, ...]
    """Roll-out folders (rewards in [0, 1]; right means above 0.5)."""
    ref_model: str
    """π_ref: a local folder or a Hugging Face model id."""
    out: Path
    """Where probe.json and probe.md go."""
    layers: tuple[int, ...] = (2, 6, 15, 30)
    """Hidden states to probe: 0 is the embedding, L the output of layer L."""
    step: int = -1
    """Completion tokens in the probed prefix; -1: the whole completion (the answer written)."""
    weight_decay: float = 1e-3
    """L2 penalty on the probe's weights (on standardized features)."""
    eval_fraction: float = 0.2
    """Share of prompts held out, with all their samples."""
    batch_size: int = 64
    """Sequences per forward pass."""
    device: str = "cpu"
    """cpu, cuda or cuda:N."""


def probed_prefix(rollout: Rollout, step: int) -> list[int] | None:
    """Prompt plus the first `step` completion tokens (all for -1); None when the completion is shorter."""
    if step > len(rollout.completion_ids):
        return None
    return rollout.prompt_ids + rollout.completion_ids[: None if step < 0 else step]


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own."""
    first, length = sequences[0], min(map(len, sequences)) - 1
    for seq in sequences:
        length = next((i for i in range(length) if seq[i] != first[i]), length)
    return length


def hidden_states(model, sequences: list[list[int]], layers: tuple[int, ...], batch_size: int) -> torch.Tensor:
    """(len(layers), N, H) hidden states at each sequence's last token.

    The prefix all sequences share (a few-shot prompt) runs once and its cache is reused; the rest is
    right-padded, which causal attention never lets the last real token see.
    """
    shared = shared_prefix_length(sequences)
    device, prefix = next(model.parameters()).device, DynamicCache()
    if shared:
        with torch.no_grad():  # fills `prefix` in place
            model(torch.tensor([sequences[0][:shared]], device=device), use_cache=True, **cache_kwarg(model, prefix))
    out = []
    for start in tqdm(range(0, len(sequences), batch_size), desc="features", unit="batch"):
        rest = [seq[shared:] for seq in sequences[start : start + batch_size]]
        width = max(map(len, rest))
        ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rest], device=device)
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(len(rest))
        with torch.no_grad():
            states = model(ids, use_cache=True, output_hidden_states=True, **cache_kwarg(model, cache))
        last = torch.tensor([len(r) - 1 for r in rest], device=device)
        rows = torch.arange(len(rest), device=device)
        out.append(torch.stack([states.hidden_states[layer][rows, last] for layer in layers]).double().cpu())
    return torch.cat(out, dim=1)


def fit_probe(x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression by L-BFGS on float64 features; returns (weights, bias)."""
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def run_probe(opts: Probe) -> list[dict[str, Any]]:
    if not opts.layers:
        raise UserError("give at least one layer to probe with --layers")
    model, _ = load_reference(opts.ref_model, opts.device, "float32")
    n_layers = model.config.num_hidden_layers
    if not all(0 <= layer <= n_layers for layer in opts.layers):
        raise UserError(f"layers must lie in [0, {n_layers}] for this model, got {list(opts.layers)}")
    train, held_out = split_by_prompt(read_rollouts(list(opts.data)), opts.eval_fraction)
    train = [r for r in train if probed_prefix(r, opts.step) is not None]
    held_out = [r for r in held_out if probed_prefix(r, opts.step) is not None]
    if not train or not held_out:
        raise UserError(f"no roll-outs with {opts.step} completion tokens on both sides of the split")
    prefixes = [probed_prefix(r, opts.step) for r in train + held_out]
    features = hidden_states(model, prefixes, opts.layers, opts.batch_size)
    labels = torch.tensor([r.reward > 0.5 for r in train + held_out], dtype=torch.float64)
    n = len(train)
    groups = [r.prompt_id for r in held_out]
    same = [(r.prompt_id, tuple(p)) for r, p in zip(held_out, prefixes[n:], strict=True)]
    rows = []
    for layer, x in zip(opts.layers, features, strict=True):
        mean, std = x[:n].mean(0), x[:n].std(0) + 1e-6
        x = (x - mean) / std
        w, b = fit_probe(x[:n], labels[:n], opts.weight_decay)
        scores = x[n:] @ w + b
        rows.append({
            "layer": layer, "step": opts.step, "pooled_auc": M.roc_auc(scores, labels[n:]),
            "within_prompt_auc": M.within_group_roc_auc(scores, labels[n:], groups, same),
            "train_rollouts": n, "held_out_rollouts": len(held_out),
        })  # fmt: skip
    write_json(opts.out / "probe.json", rows)
    header = f"# Linear probes of π_ref's hidden states after {opts.step} completion tokens (-1: all), held-out\n\n"
    columns = ["layer", "pooled_auc", "within_prompt_auc", "train_rollouts", "held_out_rollouts"]
    atomic_write_text(opts.out / "probe.md", header + markdown_table(rows, columns))
    return rows


def main(argv: list[str] | None = None) -> None:
    opts = tyro.cli(Probe, args=sys.argv[1:] if argv is None else argv, description=__doc__.split("\n\n")[0])
    try:
        rows = run_probe(opts)
    except UserError as err:
        sys.exit(f"error: {err}")
    print(markdown_table(rows, ["layer", "pooled_auc", "within_prompt_auc"]))


if __name__ == "__main__":
    main()

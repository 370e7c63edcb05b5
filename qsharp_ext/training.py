"""Value-model training: supervised learning of the final-reward distribution Z from roll-outs.

Every roll-out (prompt, completion, switch step h, final reward r) labels every prefix prompt +
completion[:j], j ≥ h, with r ("prefix extension"). All of them are scored by ONE forward pass over the
whole sequence: a V-type head at position t scores the prefix that ends with token t; a Q-type head at
position t scores the prefix extended by the token at t + 1. The loss is the head's loss (BCE, two-hot NLL
or MSE) averaged over every target position of the batch.

The loop: AdamW, linear warm-up then cosine (or constant) learning rate, gradient clipping, optional bf16
autocast; a data order that is a pure function of (seed, step), so that a run resumed from a checkpoint
ends with exactly the weights of an uninterrupted one; held-out evaluation on whole prompts (loss, ROC-AUC,
calibration, accuracy); checkpoints written to a temporary folder and renamed, the last two kept.

It knows how roll-outs look on disk (rollout_data.py) and what a value model computes (value_model.py);
it knows nothing of how roll-outs are collected or how the trained model guides decoding.

Run folder (`TrainConfig.out`):
    model/                  the final value model (ValueModel.save_pretrained)
    checkpoints/step-N/     a loadable value model plus trainer_state.pt (optimizer, scheduler, RNG, step)
    metrics.jsonl           one line per step: train loss and lr; held-out metrics on evaluation steps
    training_curve.png      train / held-out loss and held-out ROC-AUC against step
    summary.json            config, final metrics, counts and time; its presence marks a finished run
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext import distributions as D
from qsharp_ext import metrics as M
from qsharp_ext.config import check_field_types, from_recorded
from qsharp_ext.errors import UserError
from qsharp_ext.future_tokens import FutureTokenHeads, future_targets, future_token_loss
from qsharp_ext.hub import model_fingerprint
from qsharp_ext.io import atomic_write_text, check_output_folder, write_json
from qsharp_ext.loading import (
    DtypeName,
    load_reference,
    load_tokenizer,
    load_value_base,
    resolve_device,
    resolve_dtype,
)
from qsharp_ext.plots import save_figure
from qsharp_ext.rollout_data import Rollout, read_manifest, read_rollouts
from qsharp_ext.scale.data_parallel import DataParallel
from qsharp_ext.tasks.base import Task
from qsharp_ext.value_model import HeadInit, HeadKind, Parameterization, ValueModel, reads_reference

Fit = Literal["likelihood", "mse"]
FutureTargetsSource = Literal["rollout", "task"]
Schedule = Literal["cosine", "constant"]

STATE_FILE = "trainer_state.pt"
# Fields that may change when a run is resumed: they do not change what the steps already taken computed.
RESUMABLE_FIELDS = ("out", "steps", "eval_every", "save_every", "device")
# Fields that name files: unchanged when they lie in the same place relative to `out` (a moved run folder).
PATH_FIELDS = ("data", "ref_model", "init_value_model", "value_model_base")
# Fields added after checkpoints were written, with the value those checkpoints were trained with.
INTRODUCED = {
    "backbone_lr_scale": 1.0,
    "head_init": "fresh",
    "future_tokens": 0,
    "future_weight": 1.0,
    "group_by_prompt": False,
    "future_targets": "rollout",
    "extra_layers": 0,
}


@dataclasses.dataclass
class TrainConfig:
    """Train a value model on roll-outs by supervised learning (prefix extension, one pass per trajectory)."""

    out: Path
    """Run folder: model/, checkpoints/step-N/, metrics.jsonl, training_curve.png, summary.json. A folder
    holding a checkpoint is resumed from its latest one; a finished run with the same config is not redone."""
    data: tuple[Path, ...]
    """Roll-out folders (one per DAgger round); their trajectories are pooled."""
    ref_model: str
    """π_ref (folder or hub id): its first layers start the value model and its tokenizer is checked. (Called
    from `train_value_model`, π_ref is already in memory and this is only its name.)"""
    init_value_model: str | None = None
    """Start from this saved value model instead of π_ref's first layers (num_layers is then ignored)."""
    value_model_base: str | None = None
    """Build the value model from this causal LM (folder or hub id) instead of π_ref: a smaller model with
    π_ref's tokenizer (a different one is refused); π_ref's weights are then not read at all."""
    num_layers: int | None = 2
    """How many first layers of π_ref (or value_model_base) the value model's backbone copies; 0 or None: all
    of them (the same meaning as in `ValueModel.from_reference`). The default 2 is a small, fast value model
    for a first try, not a recipe's choice: the recipes copy 4 (+ 2 fresh, star graph), all of a separate 1B
    model (configs/gpu) or all of π_ref with a Q-type head (SmolLM2 arithmetic)."""
    extra_layers: int = 0
    """Freshly initialised layers added on top of the copied ones: room for more steps of lookup in a row than
    π_ref's own depth gives (the star graph's first step needed 4 + 2). Ignored with init_value_model."""
    kind: HeadKind = "bernoulli"
    """Head: bernoulli (rewards in [0, 1], BCE), histogram (n_atoms on [v_min, v_max], NLL) or mean (CD, MSE)."""
    parameterization: Parameterization = "v"
    """v: position t scores the prefix ending with token t; q: it scores every possible next token."""
    head_init: HeadInit = "fresh"
    """fresh: a small random head (std 0.02/√H); linear: a random head at torch.nn.Linear's scale, U(±1/√H), whose
    direction Adam's first steps do not scramble (it learned the star graph's last hops much faster); lm_head: a
    Q-type bernoulli head on all of the source model's layers
    (num_layers 0 or None) starts as its LM head, centred, so that it first ranks next tokens as π_ref does; its
    bias is then shifted to the training data's reward rate. Ignored with init_value_model."""
    n_atoms: int = 11
    """Atoms of the histogram head (ignored by the other heads)."""
    v_min: float = 0.0
    """Lowest reward; every reward must lie in [v_min, v_max] (bernoulli: 0)."""
    v_max: float = 1.0
    """Highest reward (bernoulli: 1)."""
    prefix_extension: bool = True
    """Label every prefix from the switch step on with the final reward; False: the switch prefix only."""
    fit: Fit = "likelihood"
    """likelihood: the head's own loss (BCE, two-hot NLL, MSE for mean); mse: regress the head's expected
    reward by MSE (the paper's ablation of the distributional loss)."""
    future_tokens: int = 0
    """K of the future-token auxiliary objective: at every target position, training-only heads also predict
    the roll-out's next 1 … K tokens (cross-entropy; see future_tokens.py). 0: off. The heads are not saved."""
    future_weight: float = 1.0
    """λ: the weight of the future-token loss beside the value loss (0: off)."""
    future_targets: FutureTargetsSource = "rollout"
    """What the future-token heads predict. rollout: the roll-out's own next 1 … K tokens, at the value loss's
    target positions (any task). task: the task's `future_targets` hook, at every position it gives targets
    for (computed from the prompt alone, e.g. the star graph's nodes further along an arm; needs a task that
    has one, passed to run_train by the pipeline)."""
    group_by_prompt: bool = False
    """Keep all roll-outs of a prompt in the same batch (batch_size should be a multiple of the samples per
    prompt), so the value model compares continuations of one prompt step by step."""
    steps: int = 200
    """Optimizer steps; raising it on a finished run continues from its last checkpoint."""
    batch_size: int = 16
    """Trajectories per step (each contributes all of its target positions)."""
    lr: float = 3e-4
    """Peak learning rate of AdamW. The default 3e-4 suits a few copied layers of a small π_ref; the recipes
    tune it (1e-3 for the tiny synthetic models, 2e-5 in the paper's 1B value models): set it."""
    backbone_lr_scale: float = 1.0
    """The backbone's learning rate as a fraction of lr (the head always trains at lr). 1: the whole value
    model trains; 0: the backbone stays as copied and only the head learns (a probe of π_ref's features; no
    gradient flows through the backbone, so steps are cheaper)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    warmup_steps: int = 20
    """Steps of linear warm-up from lr / warmup_steps to lr."""
    schedule: Schedule = "cosine"
    """After warm-up: cosine (decays to 0 at the last step) or constant."""
    grad_clip: float = 1.0
    """Clip the gradient's global norm to this (0: no clipping)."""
    bf16: bool = False
    """Run forward and backward under bfloat16 autocast (weights and optimizer state stay float32)."""
    dtype: DtypeName = "auto"
    """The dtype π_ref (or value_model_base) is read in to copy its layers: auto (bfloat16 when training on a
    GPU that has it, else float32), float32, bfloat16 or float16. The value model trains in float32 weights."""
    eval_fraction: float = 0.1
    """Share of prompts held out for evaluation, with all their samples (split by a hash of the prompt id)."""
    eval_every: int = 50
    """Evaluate on the held-out trajectories every this many steps, and at the end."""
    save_every: int = 50
    """Write a checkpoint every this many steps, and at the end (the last two are kept)."""
    seed: int = 0
    """Seed of the head's initialization and of the data order (the same seed trains the same model)."""
    device: str = "auto"
    """auto (the GPU when there is one), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_field_types(self)  # TrainConfig(out="run") works; TrainConfig(steps="10") is one sentence


def check_config(cfg: TrainConfig) -> None:
    """One clear sentence for a config that cannot work, before anything is loaded (the types and choices of
    its fields were checked when it was made)."""
    check_output_folder(cfg.out)
    if not cfg.data:
        raise UserError("no roll-out data: give one or more folders with --data")
    if not cfg.ref_model:
        raise UserError("no reference model: give π_ref's folder or hub id with --ref-model")
    if cfg.head_init == "lm_head" and (cfg.parameterization, cfg.kind) != ("q", "bernoulli"):
        raise UserError("head_init lm_head needs a Q-type bernoulli head (parameterization q, kind bernoulli)")
    if cfg.kind == "bernoulli" and (cfg.v_min, cfg.v_max) != (0.0, 1.0):
        raise UserError(f"a bernoulli head models rewards in [0, 1]; got v_min={cfg.v_min}, v_max={cfg.v_max}")
    if not cfg.v_max > cfg.v_min:
        raise UserError(f"v_max must be greater than v_min (got {cfg.v_min}, {cfg.v_max})")
    if cfg.kind == "histogram" and cfg.n_atoms < 2:
        raise UserError(f"a histogram head needs n_atoms >= 2, got {cfg.n_atoms}")
    positive = {"steps": cfg.steps, "batch_size": cfg.batch_size, "eval_every": cfg.eval_every}
    positive |= {"save_every": cfg.save_every, "lr": cfg.lr}
    for name, value in positive.items():
        if not value > 0:
            raise UserError(f"{name} must be positive, got {value}")
    nonnegative = {"warmup_steps": cfg.warmup_steps, "grad_clip": cfg.grad_clip, "weight_decay": cfg.weight_decay}
    nonnegative |= {"num_layers": cfg.num_layers or 0, "extra_layers": cfg.extra_layers}
    nonnegative |= {"future_tokens": cfg.future_tokens, "future_weight": cfg.future_weight}
    for name, value in nonnegative.items():
        if not value >= 0:  # NaN too
            raise UserError(f"{name} must not be negative, got {value}")
    if not 0 <= cfg.backbone_lr_scale <= 1:
        raise UserError(f"backbone_lr_scale must be in [0, 1], got {cfg.backbone_lr_scale}")
    resolve_dtype(cfg.dtype, cfg.device)
    if not 0 <= cfg.eval_fraction < 1:
        raise UserError(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as JSON values (paths as strings, tuples as lists)."""
    as_json = {"out": str(cfg.out), "data": [str(p) for p in cfg.data]}
    return {**dataclasses.asdict(cfg), **as_json}


# ------------------------------------------------------------------------------------------------ data


def check_rollouts(rollouts: list[Rollout], cfg: TrainConfig) -> None:
    """Rewards inside the head's support and switch steps inside the completion, naming the first offender."""
    for r in rollouts:
        where = f"prompt {r.prompt_id!r} sample {r.sample_index} (round {r.round})"
        if not cfg.v_min <= r.reward <= cfg.v_max:
            raise UserError(
                f"reward {r.reward} of {where} is outside the value head's support [{cfg.v_min}, {cfg.v_max}]; "
                "set v_min / v_max (histogram or mean head) to cover every reward"
            )
        if not 0 <= r.switch <= len(r.completion_ids):
            n = len(r.completion_ids)
            raise UserError(f"switch step {r.switch} of {where} is outside its {n}-token completion")


def target_positions(prompt_len: int, completion_len: int, switch: int, q_type: bool, prefix_extension: bool) -> range:
    """Positions whose head output scores a target prefix prompt + completion[:j], j ≥ switch.

    V-type: position t scores the prefix ending with token t, so j = switch … len(completion) sit at
    prompt_len - 1 + switch … prompt_len + completion_len - 1. Q-type: position t scores the prefix
    extended by token t + 1, so the last position is never a target. A prefix with no token (empty prompt,
    switch 0) has no position and is skipped.
    """
    first = max(prompt_len - 1 + switch, 0)
    last = prompt_len + completion_len - (2 if q_type else 1)
    if not prefix_extension:
        last = min(last, first)
    return range(first, last + 1)


def rollout_targets(rollout: Rollout, q_type: bool, prefix_extension: bool) -> range:
    """The target positions of one trajectory in its prompt + completion sequence."""
    args = (len(rollout.prompt_ids), len(rollout.completion_ids), rollout.switch)
    return target_positions(*args, q_type, prefix_extension)


def count_targets(rollout: Rollout, cfg: TrainConfig) -> int:
    return len(rollout_targets(rollout, cfg.parameterization == "q", cfg.prefix_extension))


def target_prefixes(rollouts: list[Rollout], q_type: bool, prefix_extension: bool) -> tuple[list, list]:
    """Two keys per target, in `collate`'s order: (prompt, completion step) and (prompt, the prefix itself).

    The within-prompt ROC-AUC compares targets that share the first key, leaving out pairs that share the
    second (identical prefixes, which no value model can tell apart).
    """
    steps, prefixes = [], []
    for r in rollouts:
        for position in rollout_targets(r, q_type, prefix_extension):
            step = position + (2 if q_type else 1) - len(r.prompt_ids)  # completion tokens in the scored prefix
            steps.append((r.prompt_id, step))
            prefixes.append((r.prompt_id, tuple(r.completion_ids[:step])))
    return steps, prefixes


@dataclasses.dataclass
class Batch:
    """Right-padded sequences and where their targets are: N target positions over B sequences."""

    input_ids: torch.Tensor  # (B, T) prompt + completion, right-padded
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    rows: torch.Tensor  # (N,) sequence of each target
    cols: torch.Tensor  # (N,) position whose hidden state scores the target
    next_ids: torch.Tensor  # (N,) the token after `cols` (what a Q-type head scores)
    rewards: torch.Tensor  # (N,) the trajectory's final reward, float32
    future_ids: torch.Tensor | None = None  # (B, T, K) a task's future-token targets, −100 where none

    def to(self, device: torch.device) -> Batch:
        fields = (getattr(self, f.name) for f in dataclasses.fields(self))
        return Batch(*(x.to(device) if x is not None else None for x in fields))


FutureTargets = Callable[[list[int], list[int], int], list[list[int]] | None]  # Task.future_targets


def collate(
    rollouts: list[Rollout],
    q_type: bool,
    prefix_extension: bool,
    pad_id: int = 0,
    future_targets: FutureTargets | None = None,
    k: int = 0,
) -> Batch:
    """One batch: every sequence once, every target position listed (and a task's future-token targets)."""
    seqs = [r.prompt_ids + r.completion_ids for r in rollouts]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    rows, cols, rewards = [], [], []
    for i, (r, seq) in enumerate(zip(rollouts, seqs, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        positions = rollout_targets(r, q_type, prefix_extension)
        rows += [i] * len(positions)
        cols += positions
        rewards += [r.reward] * len(positions)
    rows_t, cols_t = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)  # (N,)
    next_ids = input_ids[rows_t, (cols_t + 1).clamp(max=width - 1)]  # (N,); unused by V-type
    future_ids = None
    if future_targets is not None:
        future_ids = torch.full((len(seqs), width, k), -100, dtype=torch.long)  # (B, T, K)
        for i, r in enumerate(rollouts):
            targets = future_targets(r.prompt_ids, r.completion_ids, k)
            future_ids[i, : len(targets)] = torch.tensor(targets, dtype=torch.long).view(-1, k)
    rewards_t = torch.tensor(rewards, dtype=torch.float32)
    return Batch(input_ids, attention_mask, rows_t, cols_t, next_ids, rewards_t, future_ids)


def _prompt_hash(prompt_id: str) -> str:
    return hashlib.sha256(prompt_id.encode()).hexdigest()


def split_by_prompt(rollouts: list[Rollout], eval_fraction: float) -> tuple[list[Rollout], list[Rollout]]:
    """(train, held out): the round(eval_fraction · #prompts) prompts whose ids hash lowest are held out.

    At least one prompt is held out when eval_fraction > 0, and at least one is kept for training, so
    data with a single prompt has no held-out set. The split depends on the prompt ids only.
    """
    prompts = sorted({r.prompt_id for r in rollouts}, key=_prompt_hash)
    n_eval = max(round(eval_fraction * len(prompts)), 1) if eval_fraction > 0 else 0
    held_out = set(prompts[: min(n_eval, len(prompts) - 1)])
    return [r for r in rollouts if r.prompt_id not in held_out], [r for r in rollouts if r.prompt_id in held_out]


def data_digest(rollouts: list[Rollout]) -> str:
    """A hash of which trajectories the run trains on, to refuse resuming on different data."""
    keys = [(r.prompt_id, r.sample_index, r.round, r.seed, r.reward) for r in rollouts]
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int, groups: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The seeded permutation of the n training trajectories used in `epoch`.

    With `groups` (a group id per trajectory) the groups are permuted instead, and each group's
    trajectories follow one another in data order.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if groups is None:
        return tuple(torch.randperm(n, generator=generator).tolist())
    members: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    blocks = list(members.values())
    return tuple(i for b in torch.randperm(len(blocks), generator=generator).tolist() for i in blocks[b])


def batch_indices(step: int, batch_size: int, n: int, seed: int, groups: tuple[int, ...] | None = None) -> list[int]:
    """Trajectories of the batch at 0-based `step`: positions step·B … step·B + B − 1 of the epoch stream."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return [epoch_order(seed, p // n, n, groups)[p % n] for p in positions]


def prompt_groups(rollouts: list[Rollout]) -> tuple[int, ...]:
    """A group id per trajectory: the same for every trajectory of one prompt."""
    ids: dict[str, int] = {}
    return tuple(ids.setdefault(r.prompt_id, len(ids)) for r in rollouts)


# ----------------------------------------------------------------------------------------------- model


def q_outputs_for_tokens(model: ValueModel, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """A Q-type head's outputs for one token per row, without forming all V of them.

    Shapes: `hidden` (N, H), `tokens` (N,) → (N,) or (N, n). The head's output rows are laid out as
    (vocabulary, outputs per token), as in ValueModel.head_outputs.
    """
    per_token = model.head_config.outputs_per_token
    weight = model.head.weight.view(-1, per_token, hidden.shape[-1])[tokens]  # (N, n, H)
    bias = model.head.bias.view(-1, per_token)[tokens]  # (N, n)
    out = (torch.einsum("nkh,nh->nk", weight, hidden) + bias).float()  # (N, n)
    return out.squeeze(-1) if per_token == 1 else out


def sequence_hidden(model: ValueModel, batch: Batch) -> torch.Tensor:
    """The backbone's hidden states of the batch's sequences, one pass per sequence: (B, T, H)."""
    return model.backbone(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state


def target_hidden(model: ValueModel, batch: Batch) -> torch.Tensor:
    """The backbone's hidden state at every target of the batch: (N, H)."""
    return sequence_hidden(model, batch)[batch.rows, batch.cols]


def outputs_at_targets(model: ValueModel, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Head outputs from the targets' hidden states (N, H): (N,) or (N, n)."""
    if model.is_q_type:
        return q_outputs_for_tokens(model, hidden, batch.next_ids)
    return model.head_outputs(hidden)


def target_outputs(model: ValueModel, batch: Batch) -> torch.Tensor:
    """Head outputs at every target of the batch from one pass per sequence: (N,) or (N, n)."""
    return outputs_at_targets(model, target_hidden(model, batch), batch)


def calibrate_bias(model: ValueModel, batch: Batch) -> None:
    """Shift every bias of a Bernoulli head by one constant c so that the mean predicted P(reward = 1) over
    `batch`'s targets equals their mean reward (c by bisection; mean sigmoid rises with c).

    Why: a head copied from an LM head outputs logits of tens of nats, which as Bernoulli logits say "always
    right"; a common shift keeps its ranking of tokens and starts it at the data's rate.
    """
    with torch.no_grad():
        logits = target_outputs(model, batch).double()  # (N,)
        rate = batch.rewards.double().mean().clamp(1e-4, 1 - 1e-4)
        low, high = -logits.max().item() - 40.0, -logits.min().item() + 40.0
        for _ in range(100):
            middle = (low + high) / 2
            low, high = (middle, high) if torch.sigmoid(logits + middle).mean() < rate else (low, middle)
        model.head.bias += (low + high) / 2


def batch_loss(model: ValueModel, batch: Batch, fit: str = "likelihood") -> torch.Tensor:
    """Mean loss over every target position of the batch (prefix extension in one pass)."""
    return batch_losses(model, batch, fit, None)[0]


def batch_losses(
    model: ValueModel, batch: Batch, fit: str, heads: FutureTokenHeads | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(value loss, future-token loss or None without heads), both from the same backbone pass.

    The future-token targets are the task's (`batch.future_ids`, at every position that has one) when the
    batch carries them, else the roll-out's own next tokens at the value targets.
    """
    sequences = sequence_hidden(model, batch)  # (B, T, H)
    hidden = sequences[batch.rows, batch.cols]  # (N, H)
    value = model.loss(outputs_at_targets(model, hidden, batch), batch.rewards, fit)
    if heads is None:
        return value, None
    if batch.future_ids is not None:
        where = (batch.future_ids != -100).any(-1)  # (B, T)
        return value, future_token_loss(heads(sequences[where]), batch.future_ids[where])
    targets = future_targets(batch.input_ids, batch.attention_mask, batch.rows, batch.cols, heads.k)  # (N, K)
    return value, future_token_loss(heads(hidden), targets)


def future_heads(model: ValueModel, cfg: TrainConfig) -> FutureTokenHeads | None:
    """The training-only future-token heads, or None when the objective is off (K or λ is 0)."""
    if cfg.future_tokens == 0 or cfg.future_weight == 0:
        return None
    embeddings = model.backbone.get_input_embeddings().weight.detach()
    return FutureTokenHeads(embeddings, cfg.future_tokens).to(embeddings.device)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at 0-based `step`: linear warm-up, then cosine to 0 or constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(
    model: ValueModel, cfg: TrainConfig, heads: FutureTokenHeads | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with the heads at lr and the backbone at lr × backbone_lr_scale (frozen, and left out, at 0)."""
    model.backbone.requires_grad_(cfg.backbone_lr_scale > 0)
    head_params = [*model.head.parameters(), *(heads.parameters() if heads is not None else ())]
    groups = [{"params": head_params, "lr": cfg.lr}]
    if cfg.backbone_lr_scale > 0:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg.lr * cfg.backbone_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = functools.partial(lr_factor, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, schedule=cfg.schedule)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def train_step(
    model: ValueModel,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    cfg: TrainConfig,
    device: torch.device,
    dp: DataParallel | None = None,
    heads: FutureTokenHeads | None = None,
) -> dict[str, float]:
    """One optimizer step; returns the batch's value loss (and future-token loss with `heads`) and the lr.

    Data-parallel (`dp` of several processes): `batch` is this process's share; the loss and gradients are
    those of the whole global batch (see scale/data_parallel.py).
    """
    trained = torch.nn.ModuleList([model, *([heads] if heads is not None else [])])
    trained.train()
    with autocast(device, cfg.bf16):
        value, future = batch_losses(model, batch.to(device), cfg.fit, heads)
    loss = value if future is None else value + cfg.future_weight * future
    optimizer.zero_grad(set_to_none=True)
    distributed = dp is not None and dp.world_size > 1
    share = 1.0
    if distributed:  # weight this share by its target positions, as one mean over the global batch would
        positions = batch.rewards.numel()
        share = positions / dp.sum(positions)
    (loss * share).backward()
    if distributed:
        dp.sum_gradients(trained)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.grad_clip)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    record = {"train_loss": dp.sum(value.item() * share) if distributed else value.item(), "lr": lr}
    if future is not None:
        record["future_loss"] = dp.sum(future.item() * share) if distributed else future.item()
    return record


HELD_OUT_METRICS = ("eval_loss", "constant_loss", "roc_auc", "within_prompt_auc", "ece", "accuracy")


def constant_loss(model: ValueModel, rewards: torch.Tensor, fit: str = "likelihood") -> float:
    """The loss of the best constant prediction for `rewards`: their mean (mean and Bernoulli heads, MSE
    fits) or their mean two-hot histogram. A held-out loss at or above it says the value model learned
    nothing that carries over to new prompts (it memorised its training prompts)."""
    mean = rewards.float().mean()
    if model.kind == "bernoulli":
        out = torch.logit(mean.clamp(1e-6, 1 - 1e-6))
    elif model.kind == "mean":
        out = mean
    else:
        target = D.histogram_target(rewards.float() if fit != "mse" else mean.reshape(1), model.atoms.float())
        out = target.mean(0).clamp_min(1e-12).log()
    return model.loss(out.expand(len(rewards), *out.shape), rewards.float(), fit).item()


@torch.no_grad()
def predict_targets(
    model: ValueModel, rollouts: list[Rollout], cfg: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(E[z] at every target, in `collate`'s order: (N,); the targets' rewards: (N,); the mean loss)."""
    model.eval()
    expected, rewards, loss_sum = [], [], 0.0
    for start in range(0, len(rollouts), cfg.batch_size):
        batch = collate(rollouts[start : start + cfg.batch_size], model.is_q_type, cfg.prefix_extension).to(device)
        with autocast(device, cfg.bf16):
            out = target_outputs(model, batch)  # (N,) or (N, n)
            loss_sum += model.loss(out, batch.rewards, cfg.fit).item() * batch.rewards.numel()
        expected.append(model.expected_reward(out.float()).cpu())
        rewards.append(batch.rewards.cpu())
    rewards_t = torch.cat(rewards)
    return torch.cat(expected), rewards_t, loss_sum / rewards_t.numel()


@torch.no_grad()
def evaluate(model: ValueModel, rollouts: list[Rollout], cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Held-out loss, and ROC-AUC / ECE / accuracy of E[z] against the outcome reward > (v_min + v_max) / 2.

    Over every target position of the held-out trajectories (the same targets as training). `roc_auc` pools
    all of them; `within_prompt_auc` only compares targets of one prompt at one completion step (different
    prefixes), the ranking guidance relies on. Metrics that are undefined (no held-out data, one outcome
    class only) are None.
    """
    if not rollouts:
        return {key: None for key in HELD_OUT_METRICS} | {"eval_positions": 0}
    expected_t, rewards_t, loss = predict_targets(model, rollouts, cfg, device)
    outcome = rewards_t > (cfg.v_min + cfg.v_max) / 2
    prob = ((expected_t - cfg.v_min) / (cfg.v_max - cfg.v_min)).clamp(0.0, 1.0)
    steps, prefixes = target_prefixes(rollouts, model.is_q_type, cfg.prefix_extension)
    return {
        "eval_loss": loss,
        "constant_loss": constant_loss(model, rewards_t, cfg.fit),
        "roc_auc": M.roc_auc(expected_t, outcome),
        "within_prompt_auc": M.within_group_roc_auc(expected_t, outcome, steps, same=prefixes),
        "ece": M.expected_calibration_error(prob, outcome),
        "accuracy": M.accuracy(prob, outcome),
        "eval_positions": rewards_t.numel(),
    }


# ----------------------------------------------------------------------------------------- checkpoints


def checkpoint_steps(out: Path) -> list[int]:
    """Steps of the finished checkpoints in `out`/checkpoints, oldest first."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    names = (p.name for p in folder.iterdir() if (p / STATE_FILE).is_file())
    return sorted(int(n.removeprefix("step-")) for n in names if n.startswith("step-") and n[5:].isdigit())


def checkpoint_path(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step}"


def replace_folder(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final` by renames, so `final` is never half-written."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save_model(model: ValueModel, tokenizer: PreTrainedTokenizerBase, final: Path, state: dict | None = None) -> None:
    """A value model folder (plus trainer_state.pt when `state` is given), written aside and renamed."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=tokenizer)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    replace_folder(tmp, final)


def trainer_state(step: int, optimizer, scheduler, cfg: TrainConfig, digest: str, heads=None) -> dict[str, Any]:
    """What a resumed run needs beyond the saved value model; the future-token heads live only here."""
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "step": step,
        "future_heads": heads.state_dict() if heads is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": cuda_rng,
        "config": json.dumps(config_dict(cfg)),
        "data_digest": digest,
    }


def save_checkpoint(
    model, tokenizer, step: int, optimizer, scheduler, cfg: TrainConfig, digest: str, heads=None
) -> None:
    """checkpoints/step-N (atomic), then drop all but the last two."""
    state = trainer_state(step, optimizer, scheduler, cfg, digest, heads)
    save_model(model, tokenizer, checkpoint_path(cfg.out, step), state)
    for old in checkpoint_steps(cfg.out)[:-2]:
        shutil.rmtree(checkpoint_path(cfg.out, old))


def same_setting(name: str, saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether the recorded config `saved` holds the same `name` as `current` (both config_dict's): equal, or a
    path (PATH_FIELDS) in the same place relative to each one's `out`, so that a run folder moved or copied with
    the data and models in it (the pipeline's) resumes."""
    if saved.get(name) == current[name]:
        return True
    if name not in PATH_FIELDS or "out" not in saved:
        return False
    return _same_place(saved[name], saved["out"], current[name], current["out"])


def _same_place(saved: Any, saved_out: str, current: Any, current_out: str) -> bool:
    if isinstance(saved, list) and isinstance(current, list):
        pairs = zip(saved, current, strict=False)
        return len(saved) == len(current) and all(_same_place(s, saved_out, c, current_out) for s, c in pairs)
    if not (isinstance(saved, str) and isinstance(current, str) and os.path.exists(current)):
        return False  # a hub id, or None, is the same only when equal
    return os.path.relpath(saved, saved_out) == os.path.relpath(current, current_out)


def check_resumable(state: dict[str, Any], cfg: TrainConfig, digest: str, where: Path) -> None:
    """Refuse to continue a checkpoint under a config or data it was not trained with."""
    saved, current = INTRODUCED | json.loads(state["config"]), config_dict(cfg)
    changed = [k for k in current if k not in RESUMABLE_FIELDS and not same_setting(k, saved, current)]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} → {config_dict(cfg)[k]!r}" for k in changed)
        raise UserError(f"{where} was trained with another config ({diffs}); use a new --out folder")
    if state["data_digest"] != digest:
        raise UserError(f"the roll-out data changed since {where} was written; use a new --out folder")
    if state["step"] > cfg.steps:
        raise UserError(f"{where} is already past steps={cfg.steps}; raise --steps or use a new --out folder")


def restore(optimizer, scheduler, state: dict[str, Any], heads=None) -> int:
    """Future-token heads, optimizer, scheduler and RNG as they were at the checkpoint; returns its step."""
    if heads is not None:
        heads.load_state_dict(state["future_heads"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"]


# ------------------------------------------------------------------------------------------------- run


Reference = tuple[PreTrainedModel, PreTrainedTokenizerBase]  # π_ref and its tokenizer, already in memory


def layer_source(cfg: TrainConfig, reference: Reference | None = None) -> Reference:
    """(the causal LM whose first layers start the value model, π_ref's tokenizer), on the CPU unless
    `reference` (π_ref in memory, read where it is) is given.

    With value_model_base only π_ref's tokenizer is read: an 8B π_ref need not fit in memory to train a 1B value model.
    """
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    if cfg.value_model_base is None:
        return reference if reference is not None else load_reference(cfg.ref_model, device="cpu", dtype=dtype)
    tokenizer = reference[1] if reference is not None else load_tokenizer(cfg.ref_model)
    return load_value_base(cfg.value_model_base, tokenizer, dtype), tokenizer


def shares_trunk(cfg: TrainConfig) -> bool:
    """A backbone that is π_ref's own layers, frozen, with none added, is π_ref's trunk: the model is saved as its
    head and, Q-type, decodes from π_ref's own forward pass (shared_trunk.py)."""
    return cfg.backbone_lr_scale == 0 and cfg.extra_layers == 0 and cfg.value_model_base is None


def initial_model(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, ref_model: PreTrainedModel) -> ValueModel:
    """`ref_model`'s first layers plus a fresh head (float32 weights for training), or a saved value model
    whose head matches the config."""
    head = {"kind": cfg.kind, "parameterization": cfg.parameterization}
    head |= {"n_atoms": cfg.n_atoms, "v_min": cfg.v_min, "v_max": cfg.v_max}
    if cfg.init_value_model is None:
        model = ValueModel.from_reference(
            ref_model, cfg.num_layers, tokenizer, cfg.head_init, cfg.extra_layers, share_trunk=shares_trunk(cfg), **head
        )
        return model.float()
    if not Path(cfg.init_value_model).is_dir():
        raise UserError(f"value model folder {cfg.init_value_model} does not exist")
    model = ValueModel.from_pretrained(cfg.init_value_model, tokenizer=tokenizer, ref_model=ref_model)
    saved = dataclasses.asdict(model.head_config)
    if cfg.kind != "histogram":
        head.pop("n_atoms")
    mismatch = [f"{k}={saved[k]!r} (config: {v!r})" for k, v in head.items() if saved[k] != v]
    if mismatch:
        raise UserError(f"the value model at {cfg.init_value_model} has {', '.join(mismatch)}")
    return model


def load_records(path: Path, upto: int) -> list[dict[str, Any]]:
    """The metrics.jsonl records up to step `upto` (later ones belong to steps that will be redone)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if record.get("step", upto + 1) <= upto:
            records.append(record)
    return records


def finished_summary(cfg: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished run in cfg.out with the same config (out and device aside), else None."""
    path = cfg.out / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    current = config_dict(cfg)
    if not all(same_setting(k, summary["config"], current) for k in current if k not in ("out", "device")):
        return None
    summary["metrics"]["model"] = str(cfg.out / "model")  # where it is now, should the folder have moved
    return summary


def mean_train_loss(records: list[dict[str, Any]]) -> float | None:
    """Mean train loss over the steps since the evaluation before the last record."""
    previous_eval = max((i for i, r in enumerate(records[:-1]) if "eval_loss" in r), default=-1)
    losses = [r["train_loss"] for r in records[previous_eval + 1 :] if "train_loss" in r]
    return sum(losses) / len(losses) if losses else None


def prepare_data(cfg: TrainConfig) -> tuple[list[Rollout], list[Rollout]]:
    """(train, held out) trajectories with at least one target, checked."""
    rollouts = read_rollouts([Path(p) for p in cfg.data])
    check_rollouts(rollouts, cfg)
    rollouts = [r for r in rollouts if count_targets(r, cfg) > 0]
    train_set, eval_set = split_by_prompt(rollouts, cfg.eval_fraction)
    if not train_set:
        raise UserError("the roll-outs hold no training target (every switch step is at the end of its completion)")
    return train_set, eval_set


def start_or_resume(
    cfg: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    ref_model: PreTrainedModel,
    train_set: list[Rollout],
    groups: tuple[int, ...] | None,
    digest: str,
    device: torch.device,
) -> tuple[ValueModel, FutureTokenHeads | None, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, int]:
    """(model, future-token heads, optimizer, scheduler, step): fresh at step 0, or as the latest checkpoint in
    cfg.out left them."""
    torch.manual_seed(cfg.seed)  # the head's initialization
    saved_steps = checkpoint_steps(cfg.out)
    state = None
    if saved_steps:
        where = checkpoint_path(cfg.out, saved_steps[-1])
        state = torch.load(where / STATE_FILE, weights_only=True)
        check_resumable(state, cfg, digest, where)
        model = ValueModel.from_pretrained(where, tokenizer=tokenizer, ref_model=ref_model)
    else:
        model = initial_model(cfg, tokenizer, ref_model)
    model.to(device)
    if state is None and cfg.head_init == "lm_head" and cfg.init_value_model is None:
        # the first step's whole batch (not a process's share): every process shifts by the same amount
        first = [train_set[i] for i in batch_indices(0, cfg.batch_size, len(train_set), cfg.seed, groups)]
        pad_id = tokenizer.pad_token_id or 0
        calibrate_bias(model, collate(first, True, cfg.prefix_extension, pad_id).to(device))
    heads = future_heads(model, cfg)
    optimizer, scheduler = make_optimizer(model, cfg, heads)
    step = restore(optimizer, scheduler, state, heads) if state is not None else 0
    return model, heads, optimizer, scheduler, step


def task_future_targets(cfg: TrainConfig, task: Task | None) -> FutureTargets | None:
    """The task's future-token hook when the config asks for it (refused when the task has none)."""
    if cfg.future_targets != "task" or cfg.future_tokens == 0 or cfg.future_weight == 0:
        return None
    check_task_hook(task)
    return task.future_targets


def check_task_hook(task: Task | None) -> None:
    """One sentence when future_targets="task" meets a task without a `future_targets` hook."""
    if task is None or type(task).future_targets is Task.future_targets:
        name = "no task" if task is None else f"task {task.name!r}"
        raise UserError(f"future_targets task needs a task with a future_targets hook; {name} has none")


def training_info(cfg: TrainConfig, fingerprint: str | None, final: dict[str, Any]) -> dict[str, Any]:
    """How the model was trained, for its config.json and model card: π_ref (name and weights fingerprint), the
    task and rounds of its data (from the roll-out manifests), the main settings and the held-out metrics."""
    collected = [read_manifest(Path(folder))["settings"] or {} for folder in cfg.data]
    return {
        "reference_model": cfg.ref_model,
        "reference_fingerprint": fingerprint,
        "value_model_base": cfg.value_model_base,
        "task": ", ".join(sorted({str(c.get("task")) for c in collected})),
        "rounds": sorted({c.get("round") for c in collected if c.get("round") is not None}),
        "trajectories": final["train_trajectories"] + final["eval_trajectories"],
        **{k: getattr(cfg, k) for k in ("num_layers", "extra_layers", "head_init", "fit", "steps", "batch_size", "lr")},
        "metrics": {k: final.get(k) for k in HELD_OUT_METRICS},
    }


def run_train(
    cfg: TrainConfig, progress: bool = True, task: Task | None = None, reference: Reference | None = None
) -> dict[str, Any]:
    """Train (or resume, or skip a finished run), write the run folder; return the final held-out metrics.

    `task` is read only with future_targets="task": its `future_targets` hook gives the auxiliary targets.
    `reference` is π_ref and its tokenizer already in memory (`train_value_model`): then cfg.ref_model is only
    its name, and π_ref is not loaded again.
    """
    check_config(cfg)
    hook = task_future_targets(cfg, task)
    done = finished_summary(cfg)
    if done is not None:
        return done["metrics"]
    start_time = time.perf_counter()
    train_set, eval_set = prepare_data(cfg)
    digest = data_digest(train_set)
    dp = DataParallel()  # several processes under `accelerate launch`; else a no-op
    device = dp.device(cfg.device)
    ref_model, tokenizer = layer_source(cfg, reference)
    groups = prompt_groups(train_set) if cfg.group_by_prompt else None
    model, heads, optimizer, scheduler, step = start_or_resume(
        cfg, tokenizer, ref_model, train_set, groups, digest, device
    )
    fingerprint = model_fingerprint(ref_model) if cfg.value_model_base is None else None  # π_ref's, for the card
    del ref_model

    cfg.out.mkdir(parents=True, exist_ok=True)
    metrics_path = cfg.out / "metrics.jsonl"
    records = load_records(metrics_path, upto=step) if step else []  # a fresh start drops an earlier attempt's
    dp.wait()  # every process has read the folder before the main one rewrites it
    if dp.is_main:  # the only writer of the run folder
        (cfg.out / "summary.json").unlink(missing_ok=True)  # this folder no longer holds a finished run
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in records))
    log = functools.partial(log_record, metrics_path) if dp.is_main else dict
    if step == 0:
        records.append(log({"step": 0, **evaluate(model, eval_set, cfg, device)}))

    pad_id = tokenizer.pad_token_id or 0
    bar = tqdm(total=cfg.steps, initial=step, desc="training value model", disable=not (progress and dp.is_main),
               leave=False)  # fmt: skip
    while step < cfg.steps:
        indices = dp.shard(batch_indices(step, cfg.batch_size, len(train_set), cfg.seed, groups))
        batch = collate(
            [train_set[i] for i in indices], model.is_q_type, cfg.prefix_extension, pad_id, hook, cfg.future_tokens
        )
        record = {"step": step + 1, **train_step(model, batch, optimizer, scheduler, cfg, device, dp, heads)}
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record |= evaluate(model, eval_set, cfg, device)
        records.append(log(record))
        if dp.is_main and (step % cfg.save_every == 0 or step == cfg.steps):
            save_checkpoint(model, tokenizer, step, optimizer, scheduler, cfg, digest, heads)
        bar.update(1)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", lr=f"{record['lr']:.2e}")
    bar.close()

    final = {k: records[-1].get(k) for k in ("step", *HELD_OUT_METRICS, "eval_positions")}
    final |= {"train_loss": mean_train_loss(records), "train_trajectories": len(train_set)}
    final |= {"eval_trajectories": len(eval_set), "model": str(cfg.out / "model")}
    if dp.is_main:
        model.training_info = training_info(cfg, fingerprint, final)
        save_model(model, tokenizer, cfg.out / "model")
        training_curve(records, cfg.out / "training_curve.png")
        seconds = time.perf_counter() - start_time
        write_json(cfg.out / "summary.json", {"config": config_dict(cfg), "metrics": final, "seconds": seconds})
    dp.wait()  # the run folder is complete when any process returns
    return final


def finished_run(out: Path) -> tuple[TrainConfig, ValueModel, list[Rollout]]:
    """A finished run's config (from its summary.json), its saved value model and its held-out trajectories."""
    summary, model_folder = Path(out) / "summary.json", Path(out) / "model"
    if not (summary.is_file() and model_folder.is_dir()):
        raise UserError(f"{out} holds no finished training run (summary.json and model/)")
    cfg = from_recorded(TrainConfig, json.loads(summary.read_text())["config"], out=Path(out))
    _, eval_set = prepare_data(cfg)
    ref_model, tokenizer = layer_source(cfg) if reads_reference(model_folder) else (None, load_tokenizer(cfg.ref_model))
    model = ValueModel.from_pretrained(model_folder, tokenizer=tokenizer, ref_model=ref_model)
    return cfg, model.to(resolve_device(cfg.device)), eval_set


def score_held_out(out: Path) -> dict[str, Any]:
    """The held-out metrics of a finished run's saved model, recomputed on its held-out prompts.

    For runs whose summary predates a metric (such as `within_prompt_auc`): nothing is trained or written.
    """
    cfg, model, eval_set = finished_run(out)
    return evaluate(model, eval_set, cfg, next(model.parameters()).device)


def log_record(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append one line to metrics.jsonl (a line cut short by a crash is skipped when resuming)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def summary_line(metrics: dict[str, Any]) -> str:
    """One line for the end of a run: held-out quality and where the model is."""

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    held_out = (
        f"held-out loss {fmt('eval_loss')} (constant {fmt('constant_loss')}), ROC-AUC {fmt('roc_auc')} "
        f"(within prompts {fmt('within_prompt_auc')}), ECE {fmt('ece')}, accuracy {fmt('accuracy')} "
        f"({metrics['eval_trajectories']} trajectories, {metrics['eval_positions']} positions)"
        if metrics.get("eval_trajectories")
        else "no held-out prompts"
    )
    line = (
        f"{metrics['step']} steps on {metrics['train_trajectories']} trajectories, train loss {fmt('train_loss')}; "
        f"{held_out}; value model in {metrics['model']}"
    )
    if no_better_than_constant(metrics):
        line += (
            "\nwarning: the held-out loss is no lower than a constant prediction's: the value model predicts the "
            "rewards of new prompts no better than their mean (memorised training prompts? more distinct prompts help)"
        )
    return line


def no_better_than_constant(metrics: dict[str, Any]) -> bool:
    """Held-out loss at or above the best constant prediction's (False when either is unknown)."""
    loss, constant = metrics.get("eval_loss"), metrics.get("constant_loss")
    return loss is not None and constant is not None and loss >= constant


# ----------------------------------------------------------------------------------------------- plots


def training_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Train and held-out loss (left) and held-out ROC-AUC, pooled and within prompts (right), written atomically."""
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    held = [r for r in records if r.get("eval_loss") is not None]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train, strict=True), color="tab:blue", alpha=0.5, linewidth=1, label="train (per step)")
    if held:
        steps, losses = [r["step"] for r in held], [r["eval_loss"] for r in held]
        ax_loss.plot(steps, losses, "o-", color="tab:orange", label="held out")
    aucs = (("roc_auc", "pooled", "tab:green"), ("within_prompt_auc", "within prompts", "tab:purple"))
    for key, label, color in aucs:
        points = [(r["step"], r[key]) for r in held if r.get(key) is not None]
        if points:
            ax_auc.plot(*zip(*points, strict=True), "o-", color=color, label=label)
    ax_auc.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax_loss.set(xlabel="step", ylabel="loss", title="Value-model loss")
    ax_auc.set(xlabel="step", ylabel="ROC-AUC", title="Held-out ROC-AUC", ylim=(0.0, 1.02))
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    save_figure(fig, path, dpi=110)

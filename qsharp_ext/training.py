"""Value-model training: the loop that fits the final-reward distribution Z to roll-outs by supervised learning.

Every roll-out (prompt, completion, switch step h, final reward r) labels every prefix prompt +
completion[:j], j ≥ h, with r ("prefix extension"). All of them are scored by ONE forward pass over the
whole sequence: a V-type head at position t scores the prefix that ends with token t; a Q-type head at
position t scores the prefix extended by the token at t + 1. The loss is the head's loss (BCE, two-hot NLL
or MSE) averaged over every target position of the batch.

The loop: AdamW, linear warm-up then cosine (or constant) learning rate, gradient clipping, optional bf16
autocast; held-out evaluation on whole prompts (loss, ROC-AUC, calibration, accuracy); a checkpoint every
save_every steps, so that a run resumed from one ends with exactly the weights of an uninterrupted one.
This module is the loop and its config; the ideas it leans on live beside it: where the targets sit and in
which order batches come (train_batches.py), checkpoints and exact resume (train_checkpoints.py), the summary
line and the training curve (train_report.py).

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
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext import distributions as D
from qsharp_ext import metrics as M
from qsharp_ext.config import check_field_types
from qsharp_ext.errors import UserError
from qsharp_ext.frozen_features import BUDGET_BYTES, FrozenFeatures, feature_bytes
from qsharp_ext.future_tokens import FutureTokenHeads, future_token_loss
from qsharp_ext.hub import model_fingerprint
from qsharp_ext.io import atomic_write_text, check_output_folder, write_json
from qsharp_ext.loading import (
    DtypeName,
    load_reference,
    load_tokenizer,
    load_value_base,
    resolve_dtype,
)
from qsharp_ext.rollout_data import Rollout, check_tokenizer_of, read_manifest, read_rollouts
from qsharp_ext.scale.data_parallel import DataParallel
from qsharp_ext.tasks.base import Task
from qsharp_ext.train_batches import (
    Batch,
    FutureTargets,
    batch_indices,
    check_rollouts,
    collate,
    count_targets,
    data_digest,
    outputs_at_targets,
    prompt_groups,
    sequence_hidden,
    split_by_prompt,
    target_outputs,
    target_prefixes,
)
from qsharp_ext.train_checkpoints import (
    STATE_FILE,
    check_resumable,
    checkpoint_path,
    checkpoint_steps,
    config_dict,
    finished_summary,
    load_records,
    log_record,
    restore,
    save_checkpoint,
    save_model,
)
from qsharp_ext.train_report import mean_train_loss, training_curve
from qsharp_ext.value_model import HeadInit, HeadKind, Parameterization, ValueModel, tokenizer_digest

Fit = Literal["likelihood", "mse"]
FutureTargetsSource = Literal["rollout", "task"]
Schedule = Literal["cosine", "constant"]
Features = Callable[[list[Rollout]], torch.Tensor] | None  # the targets' hidden states of roll-outs, when kept


@dataclasses.dataclass(kw_only=True)
class TrainSettings:
    """How a value model is built and trained: `train`'s fields that a pipeline's rounds share, nested there as
    `--train.FIELD` (the rounds fill in the rest: data, π_ref, head kind, seed, where to start from)."""

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
    pack_prompts: bool = False
    """Pass each prompt of a batch through the backbone once, its roll-outs packed behind it under a tree
    attention mask (prompt_packing.py): the same losses and gradients up to float rounding, in fewer tokens
    when prompts are long and several roll-outs of one prompt share a batch (with group_by_prompt; the star
    graph's 64-token prompts and 6-token answers, two per prompt: 46% fewer). Attention is then quadratic in
    the prompt plus all its completions, so it does not pay for long completions."""
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
    eval_fraction: float = 0.1
    """Share of prompts held out for evaluation, with all their samples (split by a hash of the prompt id)."""
    eval_every: int = 50
    """Evaluate on the held-out trajectories every this many steps, and at the end."""
    save_every: int = 50
    """Write a checkpoint every this many steps, and at the end (the last two are kept)."""

    def __post_init__(self) -> None:
        check_field_types(self)  # TrainConfig(out="run") works; TrainConfig(steps="10") is one sentence


@dataclasses.dataclass(kw_only=True)
class TrainConfig(TrainSettings):
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
    kind: HeadKind = "bernoulli"
    """Head: bernoulli (rewards in [0, 1], BCE), histogram (n_atoms on [v_min, v_max], NLL) or mean (CD, MSE)."""
    bf16: bool = False
    """Run forward and backward under bfloat16 autocast (weights and optimizer state stay float32)."""
    dtype: DtypeName = "auto"
    """The dtype π_ref (or value_model_base) is read in to copy its layers: auto (bfloat16 when training on a
    GPU that has it, else float32), float32, bfloat16 or float16. The value model trains in float32 weights."""
    seed: int = 0
    """Seed of the head's initialization and of the data order (the same seed trains the same model)."""
    device: str = "auto"
    """auto (the GPU when there is one), cpu, cuda or cuda:N."""


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


# ----------------------------------------------------------------------------------------------- model


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
    if batch.features is not None:  # a frozen backbone's, computed once (no task targets need other positions)
        sequences, hidden = None, batch.features  # (N, H)
    else:
        sequences = sequence_hidden(model, batch)  # (B, T, H)
        hidden = sequences[batch.rows, batch.cols]  # (N, H)
    value = model.loss(outputs_at_targets(model, hidden, batch), batch.rewards, fit)
    if heads is None:
        return value, None
    if batch.future_ids is not None:
        where = (batch.future_ids != -100).any(-1)  # (B, T)
        weights = batch.future_weights[where] if batch.future_weights is not None else None
        return value, future_token_loss(heads(sequences[where]), batch.future_ids[where], weights)
    return value, future_token_loss(heads(hidden), batch.target_future_ids)


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


# --------------------------------------------------------------------------------- held-out evaluation


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
    model: ValueModel, rollouts: list[Rollout], cfg: TrainConfig, device: torch.device, features: Features = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(E[z] at every target, in `collate`'s order: (N,); the targets' rewards: (N,); the mean loss)."""
    model.eval()
    expected, rewards, loss_sum = [], [], 0.0
    for start in range(0, len(rollouts), cfg.batch_size):
        part = rollouts[start : start + cfg.batch_size]
        batch = collate(part, model.is_q_type, cfg.prefix_extension, features=features, pack_prompts=cfg.pack_prompts)
        batch = batch.to(device)
        with autocast(device, cfg.bf16):
            out = target_outputs(model, batch)  # (N,) or (N, n)
            loss_sum += model.loss(out, batch.rewards, cfg.fit).item() * batch.rewards.numel()
        expected.append(model.expected_reward(out.float()).cpu())
        rewards.append(batch.rewards.cpu())
    rewards_t = torch.cat(rewards)
    return torch.cat(expected), rewards_t, loss_sum / rewards_t.numel()


@torch.no_grad()
def evaluate(
    model: ValueModel, rollouts: list[Rollout], cfg: TrainConfig, device: torch.device, features: Features = None
) -> dict[str, Any]:
    """Held-out loss, and ROC-AUC / ECE / accuracy of E[z] against the outcome reward > (v_min + v_max) / 2.

    Over every target position of the held-out trajectories (the same targets as training). `roc_auc` pools
    all of them; `within_prompt_auc` only compares targets of one prompt at one completion step (different
    prefixes), the ranking guidance relies on. Metrics that are undefined (no held-out data, one outcome
    class only) are None.
    """
    if not rollouts:
        return {key: None for key in HELD_OUT_METRICS} | {"eval_positions": 0}
    expected_t, rewards_t, loss = predict_targets(model, rollouts, cfg, device, features)
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


def frozen_features(
    cfg: TrainConfig, model: ValueModel, rollouts: list[Rollout], hook: FutureTargets | None, progress: bool
) -> Features:
    """The targets' hidden states, computed once, when the backbone is frozen (nothing it computes can change),
    no task target needs other positions, and they fit in BUDGET_BYTES; else None (a pass per batch)."""
    if cfg.backbone_lr_scale > 0 or hook is not None:
        return None
    weight = model.head.weight
    if feature_bytes(sum(count_targets(r, cfg) for r in rollouts), weight.shape[1], weight.dtype) > BUDGET_BYTES:
        return None
    model.eval()  # a frozen trunk is read without dropout
    device = weight.device
    with autocast(device, cfg.bf16):
        return FrozenFeatures(model.backbone, rollouts, model.is_q_type, cfg.prefix_extension, progress).at_targets


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
    check_tokenizer_of(cfg.data, tokenizer_digest(tokenizer))
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
    features = frozen_features(cfg, model, train_set + eval_set, hook, progress and dp.is_main)
    if step == 0:
        records.append(log({"step": 0, **evaluate(model, eval_set, cfg, device, features)}))

    pad_id = tokenizer.pad_token_id or 0
    bar = tqdm(total=cfg.steps, initial=step, desc="training value model", disable=not (progress and dp.is_main),
               leave=False)  # fmt: skip
    while step < cfg.steps:
        indices = dp.shard(batch_indices(step, cfg.batch_size, len(train_set), cfg.seed, groups))
        batch = collate(
            [train_set[i] for i in indices], model.is_q_type, cfg.prefix_extension, pad_id, hook, cfg.future_tokens,
            features, cfg.pack_prompts,
        )  # fmt: skip
        record = {"step": step + 1, **train_step(model, batch, optimizer, scheduler, cfg, device, dp, heads)}
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record |= evaluate(model, eval_set, cfg, device, features)
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

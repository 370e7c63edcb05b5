"""Training targets and batches: which positions of a roll-out a value model learns from, in what order.

Why it exists: the training loop, its held-out evaluation and the experiment programs must all agree on the
same targets, the same held-out prompts and the same data order; this module is that one agreement.

- Targets ("prefix extension"): a roll-out (prompt, completion, switch step h, final reward r) labels every
  prefix prompt + completion[:j], j ≥ h, with r. A V-type head at position t scores the prefix ending with
  token t, a Q-type head the prefix extended by token t + 1: `target_positions` turns that into positions of
  one sequence, `collate` into a right-padded batch that lists every target, and the head-output helpers read
  the value model at exactly those positions, from one backbone pass per sequence.
- Splits and order: held-out prompts are chosen by a hash of their id; the data order is a seeded permutation
  per epoch, a pure function of (seed, step), so that a resumed run sees the batches an uninterrupted one would.

It knows roll-outs (rollout_data.py) and what a value model's head outputs (value_model.py); it knows nothing
of optimizers, losses, checkpoints or run folders.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from qsharp_ext.errors import UserError
from qsharp_ext.future_tokens import future_targets as rollout_future_targets
from qsharp_ext.prompt_packing import tree_layout, tree_mask
from qsharp_ext.rollout_data import Rollout
from qsharp_ext.value_model import ValueModel

if TYPE_CHECKING:  # annotations only: training.py imports this module
    from qsharp_ext.training import TrainConfig


# --------------------------------------------------------------------------------------------- targets


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


# --------------------------------------------------------------------------------------------- batches


@dataclasses.dataclass
class Batch:
    """Right-padded sequences and where their targets are: N target positions over B sequences.

    Packed (`collate(pack_prompts=True)`), a sequence is one prompt followed by every completion of it in the
    batch, each attending to the prompt and its own earlier tokens only (`branch`, prompt_packing.py), at the
    positions it has alone (`position_ids`); several targets may then sit at one shared prompt position.
    """

    input_ids: torch.Tensor  # (B, T) prompt + completion(s), right-padded
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    rows: torch.Tensor  # (N,) sequence of each target
    cols: torch.Tensor  # (N,) position whose hidden state scores the target
    next_ids: torch.Tensor  # (N,) the token after the target's prefix in its own roll-out (what a Q-type head scores)
    rewards: torch.Tensor  # (N,) the trajectory's final reward, float32
    future_ids: torch.Tensor | None = None  # (B, T, K) a task's future-token targets, −100 where none
    features: torch.Tensor | None = None  # (N, H) a frozen backbone's hidden states at the targets, when known
    target_future_ids: torch.Tensor | None = None  # (N, K) the roll-out's own next 1 … K tokens at each target
    future_weights: torch.Tensor | None = None  # (B, T) packed with a task's targets: roll-outs sharing each position
    position_ids: torch.Tensor | None = None  # (B, T) packed: each token's position in its own roll-out
    branch: torch.Tensor | None = None  # (B, T) packed: 0 on the prompt, i + 1 on the i-th completion, −1 on padding

    def to(self, device: torch.device) -> Batch:
        fields = (getattr(self, f.name) for f in dataclasses.fields(self))
        return Batch(*(x.to(device) if x is not None else None for x in fields))


FutureTargets = Callable[[list[int], list[int], int], list[list[int]] | None]  # Task.future_targets


def right_padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (B, T): the sequences right-padded with pad_id, mask 1 on real tokens."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


def collate(
    rollouts: list[Rollout],
    q_type: bool,
    prefix_extension: bool,
    pad_id: int = 0,
    future_targets: FutureTargets | None = None,
    k: int = 0,
    features: Callable[[list[Rollout]], torch.Tensor] | None = None,
    pack_prompts: bool = False,
) -> Batch:
    """One batch: every target position listed, with its reward (and the future-token targets of a task hook
    or, with k > 0 and no hook, of the roll-out itself; and the targets' hidden states from `features`: a frozen
    backbone's, see frozen_features.py). Every sequence once, or with `pack_prompts` every prompt once."""
    seqs = [r.prompt_ids + r.completion_ids for r in rollouts]
    input_ids, attention_mask = right_padded(seqs, pad_id)  # (B, T) each
    targets = [rollout_targets(r, q_type, prefix_extension) for r in rollouts]
    rows = torch.tensor([i for i, t in enumerate(targets) for _ in t], dtype=torch.long)  # (N,)
    cols = torch.tensor([c for t in targets for c in t], dtype=torch.long)  # (N,)
    rewards = torch.tensor([r.reward for r, t in zip(rollouts, targets, strict=True) for _ in t], dtype=torch.float32)
    next_ids = input_ids[rows, (cols + 1).clamp(max=input_ids.shape[1] - 1)]  # (N,); unused by V-type
    own_future = None
    if future_targets is None and k > 0:
        own_future = rollout_future_targets(input_ids, attention_mask, rows, cols, k)  # (N, K)
    hook_rows = [future_targets(r.prompt_ids, r.completion_ids, k) for r in rollouts] if future_targets else None
    hidden = features(rollouts) if features is not None else None  # (N, H)
    batch = Batch(input_ids, attention_mask, rows, cols, next_ids, rewards, None, hidden, own_future)
    if pack_prompts:
        return packed(batch, rollouts, hook_rows, k, pad_id)
    if hook_rows is not None:
        batch.future_ids = future_table(hook_rows, input_ids.shape[1], k)
    return batch


def future_table(rows: list[list[list[int]]], width: int, k: int) -> torch.Tensor:
    """A task hook's targets, one list of K per token of each sequence, as a (B, width, K) tensor, −100 past the end."""
    table = torch.full((len(rows), width, k), -100, dtype=torch.long)  # (B, T, K)
    for i, r in enumerate(rows):
        table[i, : len(r)] = torch.tensor(r, dtype=torch.long).view(-1, k)
    return table


def packed(batch: Batch, rollouts: list[Rollout], hook_rows: list | None, k: int, pad_id: int) -> Batch:
    """`batch` with the roll-outs of one prompt packed into one sequence behind a single copy of it.

    Every hidden state the value model reads, and every loss term, is the one of the unpacked batch: each
    completion sees the prompt and itself at its own positions, a task's targets at a prompt position count
    once per roll-out sharing it (`future_weights`; the hook's targets there depend on the prompt alone), and
    the targets keep their order, rewards and next tokens.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(rollouts):
        groups.setdefault(tuple(r.prompt_ids), []).append(i)
    seqs, positions, branches, weights, futures = [], [], [], [], []
    place = torch.zeros_like(batch.input_ids)  # (B, T) packed column of each unpacked position
    row_of = torch.zeros(len(rollouts), dtype=torch.long)  # (B,) packed sequence of each roll-out
    for g, (prompt, members) in enumerate(groups.items()):
        p, seq = len(prompt), list(prompt)
        completions = [rollouts[i].completion_ids for i in members]
        position, branch = tree_layout(p, [len(c) for c in completions])
        weights.append([len(members)] * p + [1] * (len(position) - p))
        future = list(hook_rows[members[0]][:p]) if hook_rows is not None else []
        for i, completion in zip(members, completions, strict=True):
            place[i, :p] = torch.arange(p)
            place[i, p : p + len(completion)] = torch.arange(len(seq), len(seq) + len(completion))
            row_of[i] = g
            seq += completion
            future += hook_rows[i][p:] if hook_rows is not None else []
        seqs.append(seq)
        positions.append(position)
        branches.append(branch)
        futures.append(future)
    input_ids, attention_mask = right_padded(seqs, pad_id)  # (G, T')
    future_ids = future_weights = None
    if hook_rows is not None:  # the weights only count the task's targets (the roll-out's own sit per target)
        future_ids = future_table(futures, input_ids.shape[1], k)  # (G, T', K)
        future_weights = right_padded(weights, 0)[0].float()  # (G, T')
    return dataclasses.replace(
        batch, input_ids=input_ids, attention_mask=attention_mask, rows=row_of[batch.rows],
        cols=place[batch.rows, batch.cols], future_ids=future_ids, future_weights=future_weights,
        position_ids=right_padded(positions, 0)[0], branch=right_padded(branches, -1)[0],
    )  # fmt: skip


# ------------------------------------------------------------------------------------- split and order


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


# ------------------------------------------------------------------------- head outputs at the targets


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
    if batch.branch is None:
        mask, positions = batch.attention_mask, None
    else:  # packed: each completion sees the prompt and itself
        mask, positions = tree_mask(batch.branch, next(model.backbone.parameters()).dtype), batch.position_ids
    return model.backbone(
        input_ids=batch.input_ids, attention_mask=mask, position_ids=positions, use_cache=False
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
    """Head outputs at every target of the batch, from its features or one pass per sequence: (N,) or (N, n)."""
    hidden = batch.features if batch.features is not None else target_hidden(model, batch)
    return outputs_at_targets(model, hidden, batch)

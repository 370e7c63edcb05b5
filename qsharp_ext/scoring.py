"""The value model's side of decoding: its KV cache, and head outputs for each step's k candidates.

V-type: the k candidates go through the value model as k tokens at the same position, each seeing the
cached prefix and itself only (a tree attention mask, the public 4D-mask path of `transformers`); the
sampled token rides along in the next step's pass, ahead of the candidates, whose keys and values are then
dropped: one pass per step whether or not the token was a candidate, and nothing to decide on the host.
Q-type: the hidden state at the last position scores every next token, so scoring runs the head's rows of
the k candidates only. A shared-trunk Q-type model (shared_trunk.py) takes that hidden state from π_ref's own
pass: no second backbone, no cache of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from transformers import DynamicCache, PreTrainedModel

from qsharp_ext.fixed_shapes import FixedSlots, GrowingSlots, additive_mask, fixed_prompt_mask, model_mask
from qsharp_ext.kv_cache import FixedCache, ReservedCache
from qsharp_ext.shared_trunk import trunk_features
from qsharp_ext.value_model import ValueModel


def cache_kwarg(model: PreTrainedModel, cache: DynamicCache) -> dict[str, DynamicCache]:
    """The KV-cache argument under the name this model's forward takes (`past_key_values` is being renamed
    `cache` in newer `transformers` releases)."""
    forward = model.backbone.forward if isinstance(model, ValueModel) else model.forward
    name = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
    return {name: cache}


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of every token counting real tokens only, so left padding does not shift positions."""
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


def prefill(
    run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: DynamicCache,
    repeats: int = 1,
) -> torch.Tensor:
    """Run the prompts into `cache` and return each row's last-position output.

    `run(ids, mask, position_ids)` is one forward pass returning (rows, length, ...); its mask is the 2D padding
    mask, or for a FixedCache the 4D one over the cache's whole capacity (fixed_shapes.py). With `repeats` > 1
    every prompt is run once and its cache rows and output are copied to `repeats` consecutive rows: the
    samples (and η values) of one prompt share its prefill, which dominates decoding cost for short answers.
    """
    mask = attention_mask
    if isinstance(cache, FixedCache):
        mask = fixed_prompt_mask(attention_mask, cache.capacity)
    last = run(input_ids, mask, positions(attention_mask))[:, -1]
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
    return last.repeat_interleave(repeats, 0)


class CandidateScorer:
    """The value model's side of decoding: its cache, and head outputs for each step's candidates.

    The token sampled at a step enters the value cache with the next step's scoring pass (`advance` only
    remembers it): a V-type pass runs it ahead of the k candidates, then drops the candidates' keys and values;
    a Q-type model runs it alone. Either way the cache never needs to know whether the token was a candidate,
    so no step waits on the device to decide what to run.
    """

    def __init__(
        self,
        model: ValueModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        repeats: int = 1,
        capacity: int | None = None,
        fixed_shapes: bool = False,
    ) -> None:
        """Prefill the prompts (`repeats` rows per prompt share one prefill, see `prefill`). With a `capacity`
        (prompt + new tokens + k), the cache is reserved up front (kv_cache.py), and with `fixed_shapes` always
        attended whole (fixed_shapes.py)."""
        self.model, self.capacity = model, capacity
        self.dtype = next(model.parameters()).dtype
        self.cache = DynamicCache() if capacity is None else (FixedCache if fixed_shapes else ReservedCache)(capacity)
        self.cache_args = cache_kwarg(model, self.cache)  # looked up once, not at every step
        self.pending: torch.Tensor | None = None  # (N,) the last sampled token, not yet in the cache

        def run(ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
            return model.hidden(
                ids, attention_mask=model_mask(mask, self.dtype), position_ids=position, **self.cache_args
            )[0]

        self.last = prefill(run, input_ids, attention_mask, self.cache, repeats)  # (N, H): Q-type scores from it

    def score(self, cand_ids: torch.Tensor, slots: GrowingSlots | FixedSlots) -> torch.Tensor:
        """Head outputs for the k candidates of every row: (N, k) or (N, k, n). `slots` hold the cached prefix
        and the pending token, if any."""
        pending, self.pending = self.pending, None
        next_position = slots.filled()  # (N, 1): every candidate at the next position
        if self.model.is_q_type:
            if pending is not None:
                mask = model_mask(slots.query_mask(self.capacity), self.dtype)
                hidden, _ = self.model.hidden(
                    pending[:, None], attention_mask=mask, position_ids=next_position - 1, **self.cache_args
                )  # fmt: skip
                self.last = hidden[:, -1]
            return self.model.candidate_outputs(self.last, cand_ids)
        n, k = cand_ids.shape
        new = 0 if pending is None else 1
        mask = additive_mask(slots.candidate_mask(k, new), self.dtype)  # (N, 1, new + k, keys)
        ids, position = cand_ids, next_position.expand(n, k)
        if pending is not None:
            ids, position = torch.cat([pending[:, None], ids], 1), torch.cat([next_position - 1, position], 1)
        head_out, _ = self.model(ids, attention_mask=mask, position_ids=position, **self.cache_args)
        self.cache.crop(-k)  # the candidates' keys and values; the pending token's stay
        return head_out[:, new:]

    def advance(self, token: torch.Tensor) -> None:
        """Take the sampled token (its column is already in the next step's attention mask)."""
        self.pending = token


class SharedTrunkScorer:
    """A shared-trunk Q-type model's side of decoding: the head on the hidden state π_ref's pass just computed.

    π_ref runs with `output_hidden_states=True` and hands its outputs to `read` (the prompts' pass first, whose
    rows are repeated like π_ref's cache); `score` and `advance` then run no backbone at all.
    """

    def __init__(self, model: ValueModel, ref_model: PreTrainedModel, repeats: int = 1) -> None:
        self.model, self.ref_model, self.repeats = model, ref_model, repeats
        self.layers = model.head_config.shared_layers
        self.last: torch.Tensor | None = None  # (N, H)

    def read(self, hidden_states: tuple[torch.Tensor, ...]) -> None:
        """Keep the value model's hidden state at every row's last position from π_ref's `hidden_states`."""
        features = trunk_features(self.ref_model, tuple(h[:, -1] for h in hidden_states), self.layers)
        self.last = features if self.last is not None else features.repeat_interleave(self.repeats, 0)

    def score(self, cand_ids: torch.Tensor, slots: GrowingSlots | FixedSlots) -> torch.Tensor:
        return self.model.candidate_outputs(self.last, cand_ids)

    def advance(self, token: torch.Tensor) -> None:
        """Nothing to run: π_ref's pass over the token hands its hidden states to `read`."""


def candidate_scorer(
    model: ValueModel,
    ref_model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    repeats: int,
    capacity: int | None = None,
    fixed_shapes: bool = False,
) -> CandidateScorer | SharedTrunkScorer:
    """The shared-trunk scorer for a Q-type model that reads this π_ref, else the value model's own (prefilled)."""
    if model.is_q_type and model.reads(ref_model):
        return SharedTrunkScorer(model, ref_model, repeats)
    return CandidateScorer(model, input_ids, attention_mask, repeats, capacity, fixed_shapes)

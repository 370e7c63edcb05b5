"""The value model's side of decoding: its KV cache, and head outputs for each step's k candidates.

V-type: the k candidates go through the value model as k tokens at the same position, each seeing the
cached prefix and itself only (a tree attention mask, the public 4D-mask path of `transformers`); the
chosen candidate's keys and values stay in the cache, so the token is never run again. When the sampled
token was not a candidate, the candidates are dropped and the token is run (one 1-token pass).
Q-type: the hidden state at the last position scores every next token, so scoring runs the head's rows of
the k candidates only. A shared-trunk Q-type model (shared_trunk.py) takes that hidden state from π_ref's own
pass: no second backbone, no cache of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from transformers import DynamicCache, PreTrainedModel

from qsharp_ext.kernels.tree_attention import tree_attention_mask
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

    `run(ids, mask, position_ids)` is one forward pass returning (rows, length, ...). With `repeats` > 1
    every prompt is run once and its cache rows and output are copied to `repeats` consecutive rows: the
    samples (and η values) of one prompt share its prefill, which dominates decoding cost for short answers.
    """
    last = run(input_ids, attention_mask, positions(attention_mask))[:, -1]
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
    return last.repeat_interleave(repeats, 0)


def _keep_chosen_candidate(cache: DynamicCache, prefix_len: int, cand_index: torch.Tensor) -> None:
    """Drop the k scored candidates from the value cache but the chosen one, whose K/V are kept as they are."""
    rows = torch.arange(cand_index.numel(), device=cand_index.device)
    for layer in cache.layers:
        chosen_k = layer.keys[rows, :, prefix_len + cand_index].unsqueeze(2)  # (N, Hkv, 1, d)
        chosen_v = layer.values[rows, :, prefix_len + cand_index].unsqueeze(2)
        layer.keys = torch.cat([layer.keys[:, :, :prefix_len], chosen_k], dim=2)
        layer.values = torch.cat([layer.values[:, :, :prefix_len], chosen_v], dim=2)


def _drop_candidates(cache: DynamicCache, prefix_len: int) -> None:
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, :prefix_len], layer.values[:, :, :prefix_len]


class CandidateScorer:
    """The value model's side of decoding: its cache, and head outputs for each step's candidates."""

    def __init__(
        self, model: ValueModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, repeats: int = 1
    ) -> None:
        """Prefill the prompts (`repeats` rows per prompt share one prefill, see `prefill`)."""
        self.model, self.cache = model, DynamicCache()
        self.cache_args = cache_kwarg(model, self.cache)  # looked up once, not at every step

        def run(ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
            return model.hidden(ids, attention_mask=mask, position_ids=position, **self.cache_args)[0]

        self.last = prefill(run, input_ids, attention_mask, self.cache, repeats)  # (N, H): Q-type scores from it

    def score(self, cand_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Head outputs for the k candidates of every row: (N, k) or (N, k, n)."""
        if self.model.is_q_type:
            return self.model.candidate_outputs(self.last, cand_ids)
        n, k = cand_ids.shape
        allowed = tree_attention_mask(attention_mask.bool(), k)  # (N, 1, k, P + k)
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
        position = attention_mask.sum(-1, keepdim=True).expand(n, k)  # every candidate at the next position
        head_out, _ = self.model(cand_ids, attention_mask=mask, position_ids=position, **self.cache_args)
        return head_out

    def advance(self, token: torch.Tensor, cand_index: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Append the sampled token to the value cache (attention_mask already includes it)."""
        prefix_len = attention_mask.shape[1] - 1
        if not self.model.is_q_type and (cand_index >= 0).all():
            _keep_chosen_candidate(self.cache, prefix_len, cand_index)
            return
        if not self.model.is_q_type:
            _drop_candidates(self.cache, prefix_len)
        position = positions(attention_mask)[:, -1:]
        hidden, _ = self.model.hidden(
            token.unsqueeze(1), attention_mask=attention_mask, position_ids=position, **self.cache_args
        )
        self.last = hidden[:, -1]


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

    def score(self, cand_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.candidate_outputs(self.last, cand_ids)

    def advance(self, token: torch.Tensor, cand_index: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Nothing to run: π_ref's pass over the token hands its hidden states to `read`."""


def candidate_scorer(
    model: ValueModel, ref_model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, repeats: int
) -> CandidateScorer | SharedTrunkScorer:
    """The shared-trunk scorer for a Q-type model that reads this π_ref, else the value model's own (prefilled)."""
    if model.is_q_type and model.reads(ref_model):
        return SharedTrunkScorer(model, ref_model, repeats)
    return CandidateScorer(model, input_ids, attention_mask, repeats)

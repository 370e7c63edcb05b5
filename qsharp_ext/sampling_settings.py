"""The sampling settings guided_generate shares with `model.generate`, from its keywords and a GenerationConfig.

A keyword given to guided_generate wins, then a field the `GenerationConfig` sets, then the default, as in
`model.generate`, where keywords override the generation config. Shared: `do_sample` (False: greedy, the
most likely token under π at each step), `temperature`, `top_p`, `max_new_tokens` (or `max_length`, counted
from the longest prompt), `eos_token_id` and `num_return_sequences` (guided_generate's `num_samples`). A
config that asks for what guided_generate does not do (beam search, HF's top-k truncation, repetition
penalties ...) is refused in one sentence rather than ignored. It knows nothing of models or prompts' text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from transformers import GenerationConfig

from qsharp_ext.config import check_field_types
from qsharp_ext.errors import UserError


@dataclasses.dataclass
class Sampling:
    """How each row is drawn, resolved and checked; `eos_token_id` None means the model's own stop ids."""

    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    num_samples: int = 1
    eos_token_id: int | Sequence[int] | None = None

    def __post_init__(self) -> None:
        check_field_types(self)  # max_new_tokens=2.5 is refused here, not deep in the cache's allocation
        if not self.temperature > 0:
            raise UserError(f"temperature must be positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise UserError(f"num_samples must be at least 1, got {self.num_samples}")


# GenerationConfig fields that do not change what is sampled: ids, output format, caching.
NEUTRAL = {
    "pad_token_id", "bos_token_id", "decoder_start_token_id", "transformers_version", "output_scores",
    "output_logits", "output_attentions", "output_hidden_states", "return_dict_in_generate", "use_cache",
    "cache_implementation", "cache_config", "compile_config", "disable_compile", "max_cache_len",
    "prefill_chunk_size", "low_memory", "remove_invalid_values", "renormalize_logits", "length_penalty",
    "early_stopping",
}  # fmt: skip
# Fields whose value here is a no-op in `model.generate`.
NO_OP = {
    "num_beams": 1, "num_beam_groups": 1, "top_k": 0, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
    "typical_p": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "min_length": 0,
    "min_new_tokens": 0, "diversity_penalty": 0.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "guidance_scale": 1.0,
}  # fmt: skip
SHARED = {"do_sample", "temperature", "top_p", "max_new_tokens", "max_length", "eos_token_id", "num_return_sequences"}


def _from_config(config: GenerationConfig | None, prompt_width: int) -> dict[str, Any]:
    """The shared settings the config sets, under guided_generate's names; refuses the ones it cannot honour."""
    if config is None:
        return {}
    if not isinstance(config, GenerationConfig):
        raise UserError(f"generation_config must be a transformers.GenerationConfig, not {type(config).__name__}")
    fields = {k: v for k, v in config.to_diff_dict().items() if not k.startswith("_") and v is not None}
    unsupported = {k: v for k, v in fields.items() if k not in SHARED | NEUTRAL and NO_OP.get(k, object()) != v}
    if unsupported:
        listed = ", ".join(f"{k}={v!r}" for k, v in sorted(unsupported.items()))
        raise UserError(
            f"generation_config sets {listed}, which guided_generate does not apply (it shares do_sample, "
            "temperature, top_p, max_new_tokens, eos_token_id and num_return_sequences; its own top_k is the "
            "number of candidates the value model scores): unset them"
        )
    names = {"num_return_sequences": "num_samples"}
    settings = {names.get(k, k): v for k, v in fields.items() if k in SHARED and k != "max_length"}
    if "max_new_tokens" not in settings and "max_length" in fields:
        settings["max_new_tokens"] = fields["max_length"] - prompt_width
        if settings["max_new_tokens"] < 1:
            raise UserError(
                f"generation_config's max_length {fields['max_length']} leaves no room after the "
                f"longest prompt ({prompt_width} tokens): set max_new_tokens instead"
            )
    return settings


def resolve_sampling(config: GenerationConfig | None, prompt_width: int, **given: Any) -> Sampling:
    """Keywords that are not None, then the config's fields, then `Sampling`'s defaults; values checked."""
    settings = _from_config(config, prompt_width) | {k: v for k, v in given.items() if v is not None}
    return Sampling(**settings)

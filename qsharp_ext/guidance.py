"""QSharpLogitsProcessor: Q♯ guidance as a `transformers.LogitsProcessor`, for users of `model.generate`.

    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    processor = QSharpLogitsProcessor(value_model, eta=0.1, attention_mask=batch["attention_mask"])
    out = ref_model.generate(**batch, do_sample=True, top_k=0, temperature=1.0, logits_processor=[processor])

It returns π's log-probs, so `generate` samples from π ∝ π_ref · E[exp(z/η)] (or, with do_sample=False,
takes π's most likely token). Put the temperature here, not in `generate` (HF would apply it after the
guidance), and switch off `generate`'s own top-k/top-p.

`generate` does not show a logits processor the attention mask, so a padded batch needs its mask here: a
batch of different prompts without one is refused, since padding cannot be told from text (a pad id can be
a real token: SmolLM2 pads with <|im_end|>, which ends every chat turn). `num_return_sequences` copies are
matched to their prompt's mask. The processor keeps the value model's KV cache from step to step and starts
afresh when `generate` is called again (it recognises a step by its rows: the previous step's plus one
token). Beam search reorders rows between steps and is refused. The log-probs are those of `guided_generate`'s
policy (the same offsets and floor, from `qsharp_ext.guided_policy`); `guided_generate` is faster (fused
kernels) and returns exact KL.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from qsharp_ext.errors import UserError
from qsharp_ext.eta import check_eta
from qsharp_ext.fixed_shapes import GrowingSlots
from qsharp_ext.guided_policy import GuidedPolicy
from qsharp_ext.kernels import fused_step
from qsharp_ext.sampling_settings import Sampling
from qsharp_ext.scoring import CandidateScorer
from qsharp_ext.value_model import ValueModel


class QSharpLogitsProcessor(LogitsProcessor):
    """Adds each top-k candidate's log-offset ln E[exp(z/η)] to π_ref's logits (non-candidates: the floor).

    `attention_mask` is the mask of the batch given to `generate` (one row per prompt); it belongs to that
    batch: build one processor per padded batch. Without it, every row must hold the same prompt, or
    `pad_token_id` must be given and no row may start or end with it (then no row is padded). The pad id is
    never used to mask tokens.
    """

    def __init__(
        self,
        value_model: ValueModel,
        eta: float,
        top_k: int = 20,
        temperature: float = 1.0,
        attention_mask: torch.Tensor | None = None,
        pad_token_id: int | None = None,
        candidates_only: bool = False,
    ) -> None:
        Sampling(temperature=temperature)  # the one check of the settings guided_generate shares
        if attention_mask is not None and torch.as_tensor(attention_mask).dim() != 2:
            raise UserError("attention_mask must be the (prompts, length) mask of the batch given to generate")
        self.value_model, self.eta, self.top_k, self.temperature = value_model, check_eta(eta), top_k, temperature
        self.policy = GuidedPolicy.of(value_model)
        self.pad_token_id, self.candidates_only = pad_token_id, candidates_only
        self.prompt_mask = None if attention_mask is None else torch.as_tensor(attention_mask)
        self.mask_prompts: torch.Tensor | None = None  # the prompt rows `prompt_mask` was first matched to
        self.scorer: CandidateScorer | None = None
        self.slots: GrowingSlots | None = None  # the current rows' mask
        self.seen: torch.Tensor | None = None  # (B, L) the rows of the previous call

    def _prompt_mask_for(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The mask of a new prompt batch: the given one (copied for num_return_sequences), or all ones."""
        rows, width = input_ids.shape
        if self.prompt_mask is None:
            same = (input_ids == input_ids[:1]).all()
            pad = self.pad_token_id
            if not same and (pad is None or (input_ids[:, 0] == pad).any() or (input_ids[:, -1] == pad).any()):
                raise UserError(
                    f"QSharpLogitsProcessor got {rows} different prompt rows and no attention_mask: pass "
                    "attention_mask=batch['attention_mask'], since padding cannot be told from text"
                )
            return torch.ones_like(input_ids)
        mask = self.prompt_mask.to(input_ids.device)
        if mask.shape[1] != width or rows % mask.shape[0] != 0:
            raise UserError(
                f"the processor's attention_mask has shape {tuple(mask.shape)} but generate's batch has {rows} rows "
                f"of {width} tokens: give it the mask of the batch passed to generate (one processor per batch)"
            )
        prompts = input_ids[:: rows // mask.shape[0]]  # num_return_sequences copies are consecutive
        if self.mask_prompts is None:
            self.mask_prompts = prompts
        elif self.mask_prompts.shape != prompts.shape or not torch.equal(self.mask_prompts, prompts):
            raise UserError(
                "this QSharpLogitsProcessor's attention_mask belongs to the batch of its first generate call: "
                "build a new processor for a new batch"
            )
        return mask.repeat_interleave(rows // mask.shape[0], 0)

    def _continues(self, input_ids: torch.Tensor) -> bool:
        """Whether `input_ids` is the previous call's rows plus one token each (the next step of `generate`)."""
        seen = self.seen
        if seen is None or input_ids.shape != (seen.shape[0], seen.shape[1] + 1):
            return False
        if torch.equal(input_ids[:, :-1], seen):
            return True
        if (input_ids[:, None, :-1] == seen[None]).all(-1).any(-1).all():  # every row is some previous row
            raise UserError(
                "generate reordered the rows between steps (beam search?): QSharpLogitsProcessor supports "
                "sampling and greedy search only (num_beams=1)"
            )
        return False

    def _sync(self, input_ids: torch.Tensor, vocab: int) -> None:
        """Start on a new prompt batch (its arguments checked once), or append the token `generate` just chose."""
        if not self._continues(input_ids):
            if not 1 <= self.top_k <= vocab:
                raise UserError(f"top_k must be between 1 and the vocabulary size {vocab}, got {self.top_k}")
            known = self.value_model.head_config.vocab_size
            if vocab > known:
                raise UserError(
                    f"π_ref scores {vocab} tokens but the value model knows only {known}: it was built for another "
                    "π_ref, and the two must share token ids"
                )
            mask = self._prompt_mask_for(input_ids)
            self.slots, self.scorer = GrowingSlots(mask), CandidateScorer(self.value_model, input_ids, mask)
            return
        self.slots.append()
        self.scorer.advance(input_ids[:, -1])

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._sync(input_ids, scores.shape[-1])
        self.seen = input_ids.clone()  # generate's own tensor may be reused
        logits = scores.float()
        cand = fused_step.expand_candidates(logits, self.temperature, self.top_k)
        head_out = self.scorer.score(cand.ids, self.slots)  # (B, k) or (B, k, n)
        eta = torch.full((logits.shape[0],), self.eta, device=logits.device)  # (B,)
        log_pi = self.policy.log_probs(logits, cand.ids, head_out, eta, self.temperature, self.candidates_only)
        return log_pi.to(scores.dtype)

"""QSharpLogitsProcessor: Q♯ guidance as a `transformers.LogitsProcessor`, for users of `model.generate`.

    out = ref_model.generate(**inputs, do_sample=True, top_k=0, temperature=1.0,
                             logits_processor=[QSharpLogitsProcessor(value_model, eta=0.1, ...)])

It returns π's log-probs, so `generate` samples from π ∝ π_ref · E[exp(z/η)]. Put the temperature here,
not in `generate` (HF would apply it after the guidance), and switch off `generate`'s own top-k/top-p.
The processor keeps the value model's KV cache between calls, like `guided_generate`; one processor
serves one `generate` call at a time. `guided_generate` is faster (fused kernels) and returns exact KL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor

from qsharp_ext import distributions as D
from qsharp_ext.errors import UserError
from qsharp_ext.kernels import fused_step
from qsharp_ext.scoring import CandidateScorer
from qsharp_ext.value_model import ValueModel


class QSharpLogitsProcessor(LogitsProcessor):
    """Adds each top-k candidate's log-offset ln E[exp(z/η)] to π_ref's logits (non-candidates: the floor)."""

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
        if not eta > 0:
            raise UserError(f"eta must be positive, got {eta}")
        if not temperature > 0:
            raise UserError(f"temperature must be positive, got {temperature}")
        self.value_model, self.eta, self.top_k, self.temperature = value_model, eta, top_k, temperature
        self.prompt_mask, self.pad_token_id, self.candidates_only = attention_mask, pad_token_id, candidates_only
        self.scorer: CandidateScorer | None = None
        self.mask: torch.Tensor | None = None
        self.last_candidates: torch.Tensor | None = None

    def _sync(self, input_ids: torch.Tensor) -> None:
        """Start on a new prompt batch, or append the token `generate` just sampled."""
        if self.scorer is None or self.mask is None or input_ids.shape[1] != self.mask.shape[1] + 1:
            mask = self.prompt_mask
            if mask is None:
                mask = (
                    (input_ids != self.pad_token_id).long()
                    if self.pad_token_id is not None
                    else torch.ones_like(input_ids)
                )
            self.mask = mask.to(input_ids.device)
            self.scorer = CandidateScorer(self.value_model, input_ids, self.mask)
            return
        token = input_ids[:, -1]
        hits = self.last_candidates == token.unsqueeze(1)  # (B, k)
        cand_index = torch.where(hits.any(1), hits.int().argmax(1), -1)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.scorer.advance(token, cand_index, self.mask)

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not 1 <= self.top_k <= scores.shape[-1]:
            raise UserError(f"top_k must be between 1 and the vocabulary size {scores.shape[-1]}, got {self.top_k}")
        self._sync(input_ids)
        logits = scores.float()
        cand = fused_step.expand_candidates(logits, self.temperature, self.top_k)
        self.last_candidates = cand.ids
        offsets = self.value_model.log_offset(self.scorer.score(cand.ids, self.mask), self.eta)  # (B, k)
        floor = D.floor_log_offset(self.value_model.head_config.v_min, self.eta)
        guided = D.guided_logits(logits / self.temperature, cand.ids, offsets, floor, self.candidates_only)
        return F.log_softmax(guided, dim=-1).to(scores.dtype)

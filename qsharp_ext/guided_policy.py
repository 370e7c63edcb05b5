"""The guided policy of one value model, as guided_generate and QSharpLogitsProcessor both apply it.

    π(y) ∝ π_ref(y) · exp(offset(y)),

where each of π_ref's top-k candidates gets its head output's log-offset ln E[exp(z/η)] and every other token
the floor, the offset of the lowest reward: v_min/η, with v_min the head's support (0 for a Bernoulli head,
the first atom of a histogram, the declared minimum of a mean head). guided_generate draws from π with the
fused kernels; QSharpLogitsProcessor returns ln π from the kernels' torch reference. Both take the head kind,
its atoms and the floor from one `GuidedPolicy`, so that they give the same log-probs for every head.

η comes as a float tensor of rows, ∞ for an unguided row (offsets and floor 0). Nothing here checks values:
η, the temperature and top_p were checked where the user gave them.
"""

from __future__ import annotations

import dataclasses

import torch.nn.functional as F
from torch import Tensor

from qsharp_ext import distributions as D
from qsharp_ext.kernels import fused_step
from qsharp_ext.value_model import ValueModel


@dataclasses.dataclass(frozen=True)
class GuidedPolicy:
    """A value head's kind, atoms (histograms only) and lowest reward."""

    head: str
    atoms: Tensor | None
    v_min: float

    @classmethod
    def of(cls, value_model: ValueModel | None) -> GuidedPolicy:
        """The policy of `value_model`; without one, a Bernoulli head whose rows are all unguided (η = ∞)."""
        if value_model is None:
            return cls("bernoulli", None, 0.0)
        atoms = value_model.atoms if value_model.kind == "histogram" else None
        return cls(value_model.kind, atoms, value_model.head_config.v_min)

    def floor(self, eta: Tensor) -> Tensor:
        """(B,) the offset of every token that is not a candidate: v_min/η (0 for an unguided row)."""
        return D.floor_log_offset(self.v_min, eta)

    def sample(
        self, ref_logits: Tensor, cand: fused_step.Candidates, head_out: Tensor, eta: Tensor, temperature: float,
        noise: Tensor, top_p: float, candidates_only: bool,
    ) -> fused_step.StepResult:  # fmt: skip
        """One draw per row from π by the fused step (C++, CUDA or Triton; see `qsharp_ext.kernels`)."""
        return fused_step.guided_sample(
            ref_logits, cand, head_out, self.head, eta, temperature, noise, floor=self.floor(eta), atoms=self.atoms,
            top_p=top_p, candidates_only=candidates_only,
        )  # fmt: skip

    def log_probs(
        self, ref_logits: Tensor, cand_ids: Tensor, head_out: Tensor, eta: Tensor, temperature: float,
        candidates_only: bool,
    ) -> Tensor:  # fmt: skip
        """(B, V) ln π over the whole vocabulary: the fused step's torch reference, before any top-p."""
        guided = fused_step.reference_guided_logits(
            ref_logits, cand_ids, head_out, self.head, eta, temperature, floor=self.floor(eta), atoms=self.atoms,
            candidates_only=candidates_only,
        )  # fmt: skip
        return F.log_softmax(guided, dim=-1)

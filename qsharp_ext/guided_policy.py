"""The guided policy of one value model, as guided_generate and QSharpLogitsProcessor both apply it.

    π(y) ∝ π_ref(y) · exp(offset(y)),

where each of π_ref's top-k candidates gets its head output's log-offset ln E[exp(z/η)] and every other token
the floor, the offset of the lowest reward: v_min/η, with v_min the head's support (0 for a Bernoulli head,
the first atom of a histogram, the declared minimum of a mean head). guided_generate draws from π with the
fused kernels; QSharpLogitsProcessor returns ln π from the kernels' torch reference. Both take the head kind,
its atoms and the floor from one `GuidedPolicy`, so that they give the same log-probs for every head.

With `rule="cd"` the same value model guides by controlled decoding's rule instead, π ∝ π_ref·exp(E[z]/η): the
head's expected reward (its p for a Bernoulli head, the histogram's mean) goes to the fused step as a mean head's
output. For rewards in {0, 1} that p is exactly the E[z] a CD baseline regresses, so one trained model serves both
methods and they differ only in the rule.

η comes as a float tensor of rows, ∞ for an unguided row (offsets and floor 0). Nothing here checks values:
η, the temperature and top_p were checked where the user gave them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor

from qsharp_ext import distributions as D
from qsharp_ext.kernels import fused_step
from qsharp_ext.value_model import ValueModel

GuidanceRule = Literal["qsharp", "cd"]
GUIDANCE_RULES: tuple[str, ...] = get_args(GuidanceRule)


@dataclasses.dataclass(frozen=True)
class GuidedPolicy:
    """A value head's kind, atoms (histograms only) and lowest reward; `expected` turns head outputs into E[z]
    first (the CD rule on a distributional head)."""

    head: str
    atoms: Tensor | None
    v_min: float
    expected: ValueModel | None = None

    @classmethod
    def of(cls, value_model: ValueModel | None, rule: GuidanceRule = "qsharp") -> GuidedPolicy:
        """The policy of `value_model` under `rule`; without one, a Bernoulli head whose rows are all unguided."""
        if value_model is None:
            return cls("bernoulli", None, 0.0)
        if rule == "cd" and value_model.kind != "mean":
            return cls("mean", None, value_model.head_config.v_min, expected=value_model)
        atoms = value_model.atoms if value_model.kind == "histogram" else None
        return cls(value_model.kind, atoms, value_model.head_config.v_min)

    def head_outputs(self, head_out: Tensor) -> Tensor:
        """What the fused step reads as the head's outputs: E[z] under the CD rule, else the outputs as they are."""
        return head_out if self.expected is None else self.expected.expected_reward(head_out)

    def floor(self, eta: Tensor) -> Tensor:
        """(B,) the offset of every token that is not a candidate: v_min/η (0 for an unguided row)."""
        return D.floor_log_offset(self.v_min, eta)

    def sample(
        self, ref_logits: Tensor, cand: fused_step.Candidates, head_out: Tensor, eta: Tensor, temperature: float,
        noise: Tensor, top_p: float, candidates_only: bool,
    ) -> fused_step.StepResult:  # fmt: skip
        """One draw per row from π by the fused step (C++, CUDA or Triton; see `qsharp_ext.kernels`)."""
        return fused_step.guided_sample(
            ref_logits, cand, self.head_outputs(head_out), self.head, eta, temperature, noise, floor=self.floor(eta),
            atoms=self.atoms, top_p=top_p, candidates_only=candidates_only,
        )  # fmt: skip

    def log_probs(
        self, ref_logits: Tensor, cand_ids: Tensor, head_out: Tensor, eta: Tensor, temperature: float,
        candidates_only: bool,
    ) -> Tensor:  # fmt: skip
        """(B, V) ln π over the whole vocabulary: the fused step's torch reference, before any top-p."""
        guided = fused_step.reference_guided_logits(
            ref_logits, cand_ids, self.head_outputs(head_out), self.head, eta, temperature, floor=self.floor(eta),
            atoms=self.atoms, candidates_only=candidates_only,
        )  # fmt: skip
        return F.log_softmax(guided, dim=-1)

"""The future-token auxiliary objective of value-model training: predict the roll-out's next 1 … K tokens.

Why: a value model learns the final reward from 0/1 labels alone only as far back as a short chain of
reasoning reaches. On the star graph the first step's value needs three edge lookups; BCE alone teaches
one (`results/stargraph/`). Asking the same hidden state to also name the tokens the roll-out writes 1, 2
… K steps later gives every intermediate lookup its own target, and the reward then reads off the end of
the chain. The targets are the roll-out's own tokens, so the objective is self-supervised and serves any
task.

The heads: per offset j a linear map H → H (starting as the identity), then one shared unembedding H → V
(starting as a copy of the backbone's input embeddings). They exist only during training: the saved value
model carries none of them, and decoding never runs them.

At every target position t of a batch (where the value loss applies) and every offset j with t + j inside
the sequence, the loss is the cross-entropy of head j at t against token t + j; the objective is the mean
over offsets of each offset's mean over its positions (offsets with no position left out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FutureTokenHeads(nn.Module):
    """K heads that read a hidden state (…, H) and give logits (…, K, V) over the tokens 1 … K steps ahead."""

    def __init__(self, embeddings: torch.Tensor, k: int) -> None:
        super().__init__()
        vocab, hidden = embeddings.shape
        self.offsets = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(k))
        for layer in self.offsets:
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.unembed = nn.Linear(hidden, vocab, bias=False)
        with torch.no_grad():
            self.unembed.weight.copy_(embeddings.float())

    @property
    def k(self) -> int:
        return len(self.offsets)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.unembed(torch.stack([layer(hidden) for layer in self.offsets], -2))  # (…, K, V)


def future_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, k: int
) -> torch.Tensor:
    """The token j steps after each target position, j = 1 … k: (N, k), −100 past its sequence's end.

    Shapes: input_ids and attention_mask (B, T) right-padded, rows and cols (N,).
    """
    lengths = attention_mask.sum(-1)[rows]  # (N,)
    ahead = cols[:, None] + torch.arange(1, k + 1, device=cols.device)  # (N, k)
    tokens = input_ids[rows[:, None], ahead.clamp(max=input_ids.shape[1] - 1)]  # (N, k)
    return tokens.masked_fill(ahead >= lengths[:, None], -100)


def future_token_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over offsets (those with a target) of the mean cross-entropy at each offset's positions.

    Shapes: logits (N, K, V), targets (N, K) with −100 where there is no token; `weights` (N,): how many
    sequences each position stands for (a prompt position shared by packed roll-outs), 1 when None.
    """
    per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none")  # (N, K)
    present = (targets != -100).float()  # (N, K)
    if weights is not None:
        present = present * weights[:, None]
    count = present.sum(0)  # (K,)
    per_offset = (per_token * present).sum(0) / count.clamp(min=1)  # (K,)
    used = count > 0
    if not used.any():
        return logits.sum() * 0.0  # no offset has a target: zero, still attached to the graph
    return per_offset[used].mean()

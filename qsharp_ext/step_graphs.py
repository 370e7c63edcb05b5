"""A decoding step replayed as one CUDA graph: no per-step launch cost of its hundreds of small kernels.

Decoding a token costs, besides the arithmetic, one Python dispatch and one kernel launch per operation of both
models, the top-k and the draw; on a GPU with a small batch that overhead can exceed the arithmetic. With fixed
shapes (fixed_shapes.py) every step after the first runs the same operations on the same tensors, so it can be
captured once and replayed. What a step reads from the previous one lives in tensors it updates in place (the
slots, the caches' cursors, the step counter and the last token in `Decoded`), never in Python values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch


@dataclasses.dataclass
class Decoded:
    """What decoding has produced so far, written in place at `step` (a device counter)."""

    tokens: torch.Tensor  # (T, N) int64, pad_id where not drawn
    logp_pi: torch.Tensor  # (T, N) float32, 0 where not drawn
    logp_ref: torch.Tensor  # (T, N)
    kl: torch.Tensor  # (N,)
    lengths: torch.Tensor  # (N,) int64
    done: torch.Tensor  # (N,) bool: the row has drawn a stop token
    token: torch.Tensor  # (N,) the last token drawn (pad_id after a row's end)
    step: torch.Tensor  # (1,) int64: the next step

    @classmethod
    def empty(cls, steps: int, n: int, pad_id: int, device: torch.device) -> Decoded:
        tokens = torch.full((steps, n), pad_id, dtype=torch.long, device=device)
        zeros = torch.zeros(steps, n, device=device)
        counts = torch.zeros(n, dtype=torch.long, device=device)
        return cls(
            tokens=tokens, logp_pi=zeros, logp_ref=zeros.clone(), kl=torch.zeros(n, device=device), lengths=counts,
            done=counts.bool(), token=tokens[0].clone(), step=torch.zeros(1, dtype=torch.long, device=device),
        )  # fmt: skip

    def record(self, token: torch.Tensor, logp_pi: torch.Tensor, logp_ref: torch.Tensor, kl: torch.Tensor) -> None:
        """Write one step's draws (`token` already padded after a row's end), then move to the next step."""
        live = ~self.done
        self.tokens.index_copy_(0, self.step, token[None])
        self.logp_pi.index_copy_(0, self.step, torch.where(live, logp_pi, 0.0)[None])
        self.logp_ref.index_copy_(0, self.step, torch.where(live, logp_ref, 0.0)[None])
        self.kl += torch.where(live, kl, 0.0)
        self.lengths += live.long()
        self.token.copy_(token)
        self.step += 1


def captured(step: Callable[[], None]) -> torch.cuda.CUDAGraph:
    """Run `step` once for real on a side stream (lazy initialisations happen outside the capture), then capture
    it: each `replay()` of the returned graph is one more step."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph

"""Data-parallel value-model training under `accelerate launch`: each process takes its share of the global
batch and the gradients are summed across processes before the (identical) optimizer step.

Why not a DDP wrapper (`accelerator.prepare(model)`): the training loss runs through the value model's
backbone and head separately (one pass, every target position), so the wrapper's forward, which arms DDP's
gradient hooks, would never be called. And the loss is a mean over target positions, whose number differs
from process to process: each process scales its loss by its share of the positions and the gradients are
summed, so the step is the one a single process takes on the whole batch, up to floating-point summation
order. One process (no launcher): every method is the identity and Accelerate is not imported.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from qsharp_ext.errors import UserError
from qsharp_ext.loading import resolve_device


class DataParallel:
    """This process's place in the run: rank, world size, and the few collective operations training needs."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch (and torchrun)
        self.accelerator: Any = None
        self.rank = 0
        if self.world_size > 1:
            try:
                from accelerate import Accelerator
            except ImportError:
                raise UserError('a multi-process launch needs Accelerate: pip install "accelerate>=0.26"') from None
            # cpu=True without a GPU: the processes then join over gloo (MULTI_CPU) instead of running alone
            self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
            self.rank = self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder (metrics, checkpoints, model, summary)."""
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        """The launcher's device for this process (its GPU, or the CPU under --cpu) unless one is named."""
        if self.accelerator is not None and requested == "auto":
            return self.accelerator.device
        return resolve_device(requested)

    def shard(self, indices: list[int]) -> list[int]:
        """This process's contiguous share of the global batch."""
        if len(indices) % self.world_size:
            raise UserError(f"batch_size {len(indices)} must be a multiple of the {self.world_size} processes")
        size = len(indices) // self.world_size
        return indices[self.rank * size : (self.rank + 1) * size]

    def sum(self, value: float) -> float:
        """`value` summed over processes (float64 on the wire)."""
        if self.accelerator is None:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor, reduction="sum").item()

    def sum_gradients(self, model: torch.nn.Module) -> None:
        """Replace every gradient by its sum over processes, in one all-reduce (a missing one counts as 0)."""
        if self.accelerator is None:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="sum")
        for p, chunk in zip(params, flat.split([g.numel() for g in grads]), strict=True):
            p.grad = chunk.view_as(p).clone()

    def wait(self) -> None:
        """Every process reaches this point before any goes on (the main one has finished writing)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

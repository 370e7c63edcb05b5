"""A KV cache reserved for a whole generation: each step writes its keys and values in place.

`transformers`' DynamicCache appends by concatenation, which copies every layer's whole cache at every step
(10% of a CPU decoding step of SmolLM2-135M at batch 16). Decoding knows its final length up front (the prompt
plus `max_new_tokens`, plus the k candidates a V-type value model scores past it), so `ReservedCache` allocates
that once per layer and hands the model a view of the filled part. Cropping (dropping scored candidates) only
shortens the view. It is a DynamicCache to every model, so every architecture that takes one takes it.
"""

from __future__ import annotations

import functools

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of `capacity` positions; `keys`/`values` view the filled part."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads, _, dim = key_states.shape
        self.buffers = tuple(s.new_empty(batch, heads, self.capacity, dim) for s in (key_states, value_states))
        self._view(0)
        self.is_initialized = True

    def _view(self, length: int) -> None:
        self.keys, self.values = (buffer[:, :, :length] for buffer in self.buffers)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"the reserved KV cache holds {self.capacity} positions, {end} were written")
        self.buffers[0][:, :, start:end] = key_states
        self.buffers[1][:, :, start:end] = value_states
        self._view(end)
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last `-tokens_to_remove` positions (a negative count, as `DynamicLayer.crop` takes)."""
        if self.is_initialized and tokens_to_remove < 0:
            self._view(max(0, self.keys.shape[-2] + tokens_to_remove))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            length = self.keys.shape[-2]
            self.buffers = tuple(buffer.repeat_interleave(repeats, dim=0) for buffer in self.buffers)
            self._view(length)


class ReservedCache(DynamicCache):
    """A DynamicCache whose layers are `ReservedLayer`s of `capacity` positions."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.layer_class_to_replicate = functools.partial(ReservedLayer, capacity)  # made at a layer's first update


class FixedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of `capacity` positions that the model always attends over whole
    (a 4D mask says which slots hold tokens, fixed_shapes.py); new ones are written at a cursor kept on the
    device. Every step then has the same shapes and addresses: what a CUDA graph replays."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.cursor: torch.Tensor | None = None  # () int64 on the device: the first free slot

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads, _, dim = key_states.shape
        self.keys, self.values = (s.new_zeros(batch, heads, self.capacity, dim) for s in (key_states, value_states))
        self.cursor = torch.zeros((), dtype=torch.long, device=self.device)
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        slots = self.cursor + torch.arange(key_states.shape[-2], device=self.device)  # (new,)
        self.keys.index_copy_(2, slots, key_states)
        self.values.index_copy_(2, slots, value_states)
        self.cursor += key_states.shape[-2]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        """Free the last `-tokens_to_remove` written slots (a negative count): the next write overwrites them."""
        if self.is_initialized and tokens_to_remove < 0:
            self.cursor -= -tokens_to_remove

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.keys, self.values = (s.repeat_interleave(repeats, dim=0) for s in (self.keys, self.values))


class FixedCache(DynamicCache):
    """A DynamicCache whose layers are `FixedLayer`s of `capacity` slots."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.layer_class_to_replicate = functools.partial(FixedLayer, capacity)

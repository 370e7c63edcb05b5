"""ReservedCache: the same keys, values and logits as transformers' DynamicCache, written in place."""

import pytest
import torch
from transformers import DynamicCache

from qsharp_ext.kv_cache import ReservedCache
from qsharp_ext.scoring import cache_kwarg
from tests.engine.conftest import make_causal_lm


def run_chunks(model, ids, cache, chunks):
    """Logits of `ids` fed to the model in `chunks` (lengths), through `cache`."""
    outs, start = [], 0
    for length in chunks:
        piece = ids[:, start : start + length]
        position = torch.arange(start, start + length).expand(ids.shape[0], -1)
        outs.append(model(input_ids=piece, position_ids=position, **cache_kwarg(model, cache)).logits)
        start += length
    return torch.cat(outs, 1)


@torch.no_grad()
def test_reserved_cache_gives_dynamic_cache_logits(arch, tokenizer):
    model = make_causal_lm(arch, len(tokenizer)).double()
    ids = torch.randint(0, len(tokenizer) - 3, (3, 12))
    chunks = [5, 1, 1, 3, 1, 1]
    want = run_chunks(model, ids, DynamicCache(), chunks)
    reserved = ReservedCache(capacity=16)
    got = run_chunks(model, ids, reserved, chunks)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert reserved.get_seq_length() == 12
    assert all(layer.buffers[0].shape[2] == 16 for layer in reserved.layers)  # one buffer, never reallocated


@torch.no_grad()
def test_crop_and_repeat_keep_the_reserved_cache_in_step(tokenizer):
    """Prefill 2 prompts, repeat each for 2 samples, score 3 throw-away tokens, crop them: as if never run."""
    model = make_causal_lm("llama", len(tokenizer)).double()
    ids = torch.randint(0, len(tokenizer) - 3, (2, 6))
    nexts = torch.randint(0, len(tokenizer) - 3, (4, 1))
    caches = {"dynamic": DynamicCache(), "reserved": ReservedCache(capacity=10)}
    logits = {}
    for name, cache in caches.items():
        model(input_ids=ids, **cache_kwarg(model, cache))
        cache.batch_repeat_interleave(2)
        model(input_ids=torch.randint(0, 40, (4, 3)), position_ids=torch.full((4, 3), 6), **cache_kwarg(model, cache))
        cache.crop(-3)
        logits[name] = model(input_ids=nexts, position_ids=torch.full((4, 1), 6), **cache_kwarg(model, cache)).logits
    fresh = model(input_ids=torch.cat([ids.repeat_interleave(2, 0), nexts], 1)).logits[:, -1:]
    torch.testing.assert_close(logits["reserved"], fresh, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits["dynamic"], fresh, rtol=1e-10, atol=1e-10)


def test_writing_past_the_capacity_raises(tokenizer):
    model = make_causal_lm("llama", len(tokenizer))
    with pytest.raises(RuntimeError, match="holds 4 positions, 5 were written"):
        model(input_ids=torch.zeros(1, 5, dtype=torch.long), **cache_kwarg(model, ReservedCache(capacity=4)))

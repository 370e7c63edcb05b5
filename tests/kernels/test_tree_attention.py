"""Candidate tree attention: the SDPA reference against a naive float64 loop; the Triton kernel (under the
interpreter on the CPU, compiled on a GPU) against the reference; input checks and backend dispatch."""

import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton reads this when a kernel is decorated, so it must be set before the kernel module is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from qsharp_ext import kernels
from qsharp_ext.kernels.tree_attention import (
    tree_attention,
    tree_attention_mask,
    tree_attention_reference,
)

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_prefix_mask(rng: torch.Generator, batch: int, n_prefix: int) -> torch.Tensor:
    """(B, P) left-padding mask; with B > 1, row 0 sees its whole prefix and the last row sees none of it."""
    pads = torch.randint(0, n_prefix + 1, (batch,), generator=rng)
    if batch > 1:
        pads[0], pads[-1] = 0, n_prefix
    return torch.arange(n_prefix)[None, :] >= pads[:, None]


def random_inputs(rng, batch, n_prefix, k, n_heads, n_kv_heads, head_dim, dtype=torch.float64):
    query = torch.randn(batch, n_heads, k, head_dim, generator=rng, dtype=dtype)
    key = torch.randn(batch, n_kv_heads, n_prefix + k, head_dim, generator=rng, dtype=dtype) * 2
    value = torch.randn(batch, n_kv_heads, n_prefix + k, head_dim, generator=rng, dtype=dtype)
    return query, key, value, random_prefix_mask(rng, batch, n_prefix)


def naive_tree_attention(query, key, value, prefix_mask, scale=None):
    """Per candidate: gather the keys it may see, softmax, weighted sum of values. Float64, no SDPA, no mask."""
    batch, n_heads, k, head_dim = query.shape
    n_prefix, g = prefix_mask.shape[1], n_heads // key.shape[1]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty(query.shape, dtype=torch.float64)
    for b in range(batch):
        seen = prefix_mask[b].nonzero().flatten().tolist()
        for h in range(n_heads):
            for i in range(k):
                positions = [*seen, n_prefix + i]
                keys = key[b, h // g, positions].double()  # (n, d)
                values = value[b, h // g, positions].double()  # (n, d)
                weights = torch.softmax(keys @ query[b, h, i].double() * scale, dim=0)  # (n,)
                out[b, h, i] = weights @ values
    return out


@pytest.mark.parametrize("head_dim", [16, 64])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)], ids=lambda hs: f"H{hs[0]}-Hkv{hs[1]}")
@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("n_prefix", [0, 1, 17])
@pytest.mark.parametrize("batch", [1, 3])
def test_reference_equals_naive_loop(rng, batch, n_prefix, k, heads, head_dim):
    query, key, value, prefix_mask = random_inputs(rng, batch, n_prefix, k, *heads, head_dim)
    out = tree_attention_reference(query, key, value, prefix_mask)
    assert out.shape == query.shape and out.dtype == query.dtype
    torch.testing.assert_close(out, naive_tree_attention(query, key, value, prefix_mask), rtol=1e-12, atol=1e-12)


def test_fully_masked_prefix_attends_to_itself_only(rng):
    query, key, value, _ = random_inputs(rng, 2, 9, 4, 4, 2, 16)
    prefix_mask = torch.zeros(2, 9, dtype=torch.bool)
    out = tree_attention_reference(query, key, value, prefix_mask)
    own_values = value[:, :, 9:].repeat_interleave(2, dim=1)  # (B, H, k, d): query head h uses kv head h // 2
    torch.testing.assert_close(out, own_values, rtol=1e-12, atol=1e-12)


def test_arbitrary_prefix_mask_and_custom_scale(rng):
    query, key, value, _ = random_inputs(rng, 3, 13, 6, 6, 3, 16)
    prefix_mask = torch.rand(3, 13, generator=rng) < 0.5  # holes anywhere, not only left padding
    out = tree_attention_reference(query, key, value, prefix_mask, scale=0.37)
    torch.testing.assert_close(out, naive_tree_attention(query, key, value, prefix_mask, scale=0.37))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reference_keeps_the_query_dtype(rng, dtype):
    query, key, value, prefix_mask = random_inputs(rng, 2, 17, 5, 4, 2, 16, dtype=dtype)
    out = tree_attention_reference(query, key, value, prefix_mask)
    assert out.dtype == dtype
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(out.double(), naive_tree_attention(query, key, value, prefix_mask), rtol=tol, atol=tol)


def test_tree_attention_mask_layout():
    prefix_mask = torch.tensor([[False, True, True]])
    mask = tree_attention_mask(prefix_mask, 2)
    expected = torch.tensor([[[[False, True, True, True, False], [False, True, True, False, True]]]])
    assert mask.shape == (1, 1, 2, 5) and torch.equal(mask, expected)


def _bad_inputs():
    ok = dict(
        query=torch.zeros(2, 4, 3, 8),
        key=torch.zeros(2, 2, 5 + 3, 8),
        value=torch.zeros(2, 2, 5 + 3, 8),
        prefix_mask=torch.ones(2, 5, dtype=torch.bool),
    )
    return {
        "query 3-d": ({**ok, "query": torch.zeros(4, 3, 8)}, "query must be"),
        "key/value differ": ({**ok, "value": torch.zeros(2, 2, 8, 4)}, "same shape"),
        "float mask": ({**ok, "prefix_mask": torch.ones(2, 5)}, "bool tensor"),
        "batch": ({**ok, "prefix_mask": torch.ones(3, 5, dtype=torch.bool)}, "batch sizes differ"),
        "head dim": ({**ok, "query": torch.zeros(2, 4, 3, 16)}, "head dims differ"),
        "positions": ({**ok, "prefix_mask": torch.ones(2, 4, dtype=torch.bool)}, "P \\+ k"),
        "heads": ({**ok, "query": torch.zeros(2, 3, 3, 8)}, "multiple of key/value heads"),
        "no candidates": ({**ok, "query": torch.zeros(2, 4, 0, 8)}, "at least one candidate"),
        "dtype": ({**ok, "key": torch.zeros(2, 2, 8, 8, dtype=torch.float64)}, "share a dtype"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_inputs_raise_value_error(case):
    inputs, message = _bad_inputs()[case]
    with pytest.raises(ValueError, match=message):
        tree_attention(**inputs, backend="torch")


# ----------------------------------------------------------------------------------------------- Triton


@pytest.fixture(scope="module")
def triton_kernel():
    """qsharp_ext.kernels.triton_tree_attention, interpreted when it runs on the CPU."""
    pytest.importorskip("triton", reason="triton is not installed")
    module = importlib.import_module("qsharp_ext.kernels.triton_tree_attention")
    if TRITON_DEVICE == "cpu" and not module.interpreted():
        pytest.skip(
            "triton was imported in this process before TRITON_INTERPRET=1 was set; "
            "run this file alone or set TRITON_INTERPRET=1 in the environment"
        )
    return module


TRITON_SHAPES = [  # (B, P, k, H, Hkv, d)
    (3, 17, 5, 4, 2, 16),  # left padding, one fully masked row, GQA
    (1, 0, 1, 4, 4, 64),  # no prefix at all
    (3, 70, 20, 6, 1, 16),  # two prefix tiles; g·k = 120 rows over two programs
    (2, 1, 20, 4, 4, 48),  # head dim that is not a power of two
]


@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=lambda s: "B{}-P{}-k{}-H{}-Hkv{}-d{}".format(*s))
def test_triton_equals_reference(rng, triton_kernel, shape):
    inputs = random_inputs(rng, *shape, dtype=torch.float32)
    expected = tree_attention_reference(*inputs)
    out = triton_kernel.tree_attention_triton(*(x.to(TRITON_DEVICE) for x in inputs))
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_triton_strided_cache_and_half_precision(rng, triton_kernel):
    batch, n_prefix, k, n_heads, n_kv_heads, head_dim = 2, 23, 6, 4, 2, 32
    query = torch.randn(batch, k, n_heads, head_dim, generator=rng).transpose(1, 2)  # (B, H, k, d), strided
    cache = torch.randn(2, batch, n_kv_heads, n_prefix + k + 9, head_dim, generator=rng)  # spare capacity
    key, value = cache[0, :, :, : n_prefix + k], cache[1, :, :, : n_prefix + k]  # views, never copied
    prefix_mask = random_prefix_mask(rng, batch, n_prefix)
    inputs = [x.to(TRITON_DEVICE) for x in (query, key, value, prefix_mask)]
    out = triton_kernel.tree_attention_triton(*inputs, scale=0.2)
    torch.testing.assert_close(out.cpu(), tree_attention_reference(query, key, value, prefix_mask, scale=0.2))
    half = [x.half() if x.is_floating_point() else x for x in inputs]
    out = triton_kernel.tree_attention_triton(*half, scale=0.2)
    assert out.dtype == torch.float16
    expected = naive_tree_attention(*(x.cpu() for x in half), scale=0.2)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=2e-3, atol=2e-3)


def test_triton_rejects_float64(triton_kernel):
    inputs = (torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8), torch.ones(1, 2).bool())
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        triton_kernel.tree_attention_triton(*(x.double() if x.is_floating_point() else x for x in inputs))


# --------------------------------------------------------------------------------------------- dispatch


def test_dispatch_to_the_reference(rng):
    inputs = random_inputs(rng, 2, 5, 3, 4, 2, 16, dtype=torch.float32)
    expected = tree_attention_reference(*inputs)
    torch.testing.assert_close(tree_attention(*inputs, backend="torch"), expected, rtol=0, atol=0)
    if kernels.compiled_extension() is not None:  # the C++ backend has no attention kernel: SDPA it is
        torch.testing.assert_close(tree_attention(*inputs, backend="cpp"), expected, rtol=0, atol=0)
        with pytest.raises(RuntimeError, match="cuda backend"):
            tree_attention(*inputs, backend="cuda")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        tree_attention(*inputs, backend="numpy")


def test_dispatch_to_triton(monkeypatch, rng, triton_kernel):
    inputs = [x.to(TRITON_DEVICE) for x in random_inputs(rng, 2, 5, 3, 4, 2, 16, dtype=torch.float32)]
    calls = []
    real = triton_kernel.tree_attention_triton
    monkeypatch.setattr(triton_kernel, "tree_attention_triton", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    expected = tree_attention_reference(*inputs)
    torch.testing.assert_close(tree_attention(*inputs, backend="triton"), expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("QSHARP_EXT_BACKEND", "triton")
    tree_attention(*inputs)
    assert calls == [1, 1]

"""The future-token objective against a naive per-position float64 reference, on fresh random inputs."""

import math

import pytest
import torch

from qsharp_ext.future_tokens import FutureTokenHeads, future_targets, future_token_loss


def naive_loss(logits: torch.Tensor, ids: list[list[int]], rows: list[int], cols: list[int], k: int) -> float:
    """Loop over offsets and positions: −log softmax(logits)[token j ahead], averaged per offset, then over
    the offsets that have any position."""
    per_offset = []
    for j in range(1, k + 1):
        terms = []
        for n, (row, col) in enumerate(zip(rows, cols, strict=True)):
            if col + j < len(ids[row]):
                z = logits[n, j - 1].tolist()
                top = max(z)
                log_norm = top + math.log(sum(math.exp(v - top) for v in z))
                terms.append(log_norm - z[ids[row][col + j]])
        if terms:
            per_offset.append(sum(terms) / len(terms))
    return sum(per_offset) / len(per_offset)


def random_batch(generator: torch.Generator, vocab: int, k: int, scale: float):
    lengths = torch.randint(2, 9, (4,), generator=generator).tolist()
    ids = [torch.randint(vocab, (n,), generator=generator).tolist() for n in lengths]
    width = max(lengths)
    input_ids = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, seq in enumerate(ids):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    rows = [i for i, n in enumerate(lengths) for _ in range(n)]
    cols = [c for n in lengths for c in range(n)]
    logits = torch.randn(len(rows), k, vocab, generator=generator, dtype=torch.float64) * scale
    return ids, input_ids, mask, rows, cols, logits


@pytest.mark.parametrize("scale", [1.0, 50.0])  # logits up to about ±50: softmax near 0 and 1
@pytest.mark.parametrize("k", [1, 3, 9])  # 9: farther than any sequence, so some offsets have no target
def test_loss_matches_a_naive_per_position_reference(rng, k, scale):
    ids, input_ids, mask, rows, cols, logits = random_batch(rng, vocab=11, k=k, scale=scale)
    targets = future_targets(input_ids, mask, torch.tensor(rows), torch.tensor(cols), k)
    for n, (row, col) in enumerate(zip(rows, cols, strict=True)):
        expected = [ids[row][col + j] if col + j < len(ids[row]) else -100 for j in range(1, k + 1)]
        assert targets[n].tolist() == expected
    got = future_token_loss(logits, targets)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(naive_loss(logits, ids, rows, cols, k), rel=1e-5, abs=1e-5)


def test_no_target_at_all_gives_zero_with_a_gradient():
    logits = torch.randn(3, 2, 5, requires_grad=True)
    loss = future_token_loss(logits, torch.full((3, 2), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_heads_start_as_the_embedding_readout_and_each_offset_trains_apart():
    embeddings = torch.randn(7, 4)
    heads = FutureTokenHeads(embeddings, k=3)
    hidden = torch.randn(5, 4)
    logits = heads(hidden)  # (5, 3, 7)
    assert logits.shape == (5, 3, 7)
    for j in range(3):  # identity maps: every offset starts as hidden · embeddingsᵀ
        torch.testing.assert_close(logits[:, j], hidden @ embeddings.T)
    future_token_loss(logits, torch.randint(7, (5, 3))).backward()
    assert all(layer.weight.grad.abs().sum() > 0 for layer in heads.offsets)
    embeddings.add_(1.0)  # a copy: the backbone's embeddings are not tied to the readout
    torch.testing.assert_close(heads(hidden)[:, 0], logits[:, 0].detach())

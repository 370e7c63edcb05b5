"""Shared test helpers: fresh random seeds (printed on failure) and the η values every numeric test covers."""

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors through its interpreter; it must be on before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

ETAS = (0.01, 0.1, 1.0, 100.0)


@pytest.fixture
def rng() -> torch.Generator:
    """A generator with a fresh seed each run (set QSHARP_TEST_SEED to replay one); the seed is reported."""
    seed = int(os.environ.get("QSHARP_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"QSHARP_TEST_SEED={seed}")
    return torch.Generator().manual_seed(seed)


def extreme_logits(rng: torch.Generator, n: int, dtype=torch.float64) -> torch.Tensor:
    """Random logits with the extremes always present: ±50, 0, and values around probabilities 1e-9 and 1 - 1e-9."""
    fixed = torch.tensor([-50.0, 50.0, 0.0, -20.7, 20.7, -1e-4, 1e-4], dtype=dtype)
    return torch.cat([fixed, torch.randn(n, generator=rng, dtype=dtype) * 15])

"""Log-offsets of the Bernoulli and histogram heads, through the compiled kernels when they apply.

η > 0 is taken as given, as in `qsharp_ext.distributions` (checked where a user gives it, not here)."""

from __future__ import annotations

import torch

from qsharp_ext import distributions
from qsharp_ext.kernels.dispatch import compiled_extension, resolve_backend

_COMPILED_DTYPES = (torch.float32, torch.float64)


def _use_compiled(x: torch.Tensor, eta: object, backend: str | None) -> bool:
    chosen = resolve_backend(x.device, backend)
    if chosen == "triton":
        raise NotImplementedError("log-offsets have no Triton kernel of their own; they are fused into the step")
    return chosen in ("cpp", "cuda") and not torch.is_tensor(eta) and x.dtype in _COMPILED_DTYPES


def bernoulli_log_offset(logit: torch.Tensor, eta: float, backend: str | None = None) -> torch.Tensor:
    """`distributions.bernoulli_log_offset`, computed by the C++/CUDA kernel when it applies."""
    if not _use_compiled(logit, eta, backend):
        return distributions.bernoulli_log_offset(logit, eta)
    return compiled_extension().bernoulli_log_offset(logit, float(eta))


def histogram_log_offset(
    logits: torch.Tensor, atoms: torch.Tensor, eta: float, backend: str | None = None
) -> torch.Tensor:
    """`distributions.histogram_log_offset`, computed by the C++/CUDA kernel when it applies."""
    if not _use_compiled(logits, eta, backend):
        return distributions.histogram_log_offset(logits, atoms, eta)
    return compiled_extension().histogram_log_offset(logits, atoms.to(logits.device), float(eta))

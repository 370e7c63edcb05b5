"""Which implementation runs a kernel: from the tensor's device, or forced by QSHARP_EXT_BACKEND."""

from __future__ import annotations

import functools
import os
from types import ModuleType

import torch

from qsharp_ext.errors import UserError

BACKENDS = ("torch", "cpp", "triton", "cuda")
BACKEND_ENV = "QSHARP_EXT_BACKEND"


@functools.cache
def compiled_extension() -> ModuleType | None:
    """qsharp_ext._C, or None when the package was not built (a source tree used without installing)."""
    try:
        from qsharp_ext import _C
    except ImportError:
        return None
    return _C


def compiled_ops() -> object:
    """torch.ops.qsharp_ext: the compiled ops, registered with torch's dispatcher when qsharp_ext._C loads; the
    dispatcher runs the CPU or the CUDA kernel by the tensors' device (resolve_backend has chosen `cpp` or
    `cuda` already)."""
    compiled_extension()
    return torch.ops.qsharp_ext


def resolve_backend(device: torch.device, backend: str | None = None) -> str:
    """The backend for tensors on `device`: `backend`, else $QSHARP_EXT_BACKEND, else the device's default.

    A forced backend that cannot run here is an error, never a silent fallback, so that a test which asks
    for the C++ kernel really runs it.
    """
    backend = backend or os.environ.get(BACKEND_ENV) or None
    if backend is None:
        if compiled_extension() is None:
            return "torch"
        if device.type == "cuda" and not compiled_extension().has_cuda():
            return "triton"
        return "cuda" if device.type == "cuda" else "cpp"
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("cpp", "cuda") and compiled_extension() is None:
        raise RuntimeError("qsharp_ext._C is not built; install the package with `pip install --no-build-isolation .`")
    if backend == "cuda" and (device.type != "cuda" or not compiled_extension().has_cuda()):
        raise RuntimeError("the cuda backend needs CUDA tensors and qsharp_ext._C built with CUDA")
    if backend == "cpp" and device.type != "cpu":
        raise RuntimeError("the cpp backend runs on CPU tensors only")
    return backend


def check_backend(device: torch.device) -> None:
    """$QSHARP_EXT_BACKEND checked where a user's call enters, before any model runs: one UserError."""
    try:
        resolve_backend(device)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"{BACKEND_ENV}={os.environ.get(BACKEND_ENV)}: {err}") from None

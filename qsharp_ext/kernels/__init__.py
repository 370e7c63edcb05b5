"""Compiled kernels and the dispatcher that picks one per call.

Backends: `cpp` (qsharp_ext._C on CPU tensors), `cuda` (qsharp_ext._C on CUDA tensors, when it was built
with CUDA), `triton` (GPU; runs on the CPU under TRITON_INTERPRET=1) and `torch` (the pure-torch reference
of `qsharp_ext.distributions`). By default a CPU tensor goes to `cpp` and a CUDA tensor to `cuda`;
QSHARP_EXT_BACKEND=torch|cpp|triton|cuda forces one (tests use it).
"""

from qsharp_ext.kernels.dispatch import BACKENDS, compiled_extension, resolve_backend
from qsharp_ext.kernels.fused_step import Candidates, StepResult, expand_candidates, guided_sample

__all__ = [
    "BACKENDS",
    "Candidates",
    "StepResult",
    "compiled_extension",
    "expand_candidates",
    "guided_sample",
    "resolve_backend",
]

"""qsharp_ext: Q♯ value-guided decoding for frozen Hugging Face causal LMs, with compiled kernels.

The numerics (`bernoulli_log_offset`, `guided_logits`, `token_kl` ...) import fast; the model-facing
API (`guided_generate`, `ValueModel`, `QSharpLogitsProcessor`) loads `transformers` on first use.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from qsharp_ext.distributions import (
    bernoulli_log_offset,
    guided_logits,
    histogram_log_offset,
    mean_log_offset,
    token_kl,
)

try:
    __version__ = version("qsharp-ext")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

_LAZY = {
    "guided_generate": "qsharp_ext.generate",
    "GenerationOutput": "qsharp_ext.generate",
    "ValueModel": "qsharp_ext.value_model",
    "QSharpLogitsProcessor": "qsharp_ext.guidance",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qsharp_ext' has no attribute {name!r}")


__all__ = [
    "GenerationOutput",
    "QSharpLogitsProcessor",
    "ValueModel",
    "__version__",
    "bernoulli_log_offset",
    "guided_generate",
    "guided_logits",
    "histogram_log_offset",
    "mean_log_offset",
    "token_kl",
]

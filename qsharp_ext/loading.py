"""Loading π_ref, its tokenizer and a value model from a folder or a Hugging Face id, with clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext.errors import UserError
from qsharp_ext.value_model import ValueModel, tokenizer_digest

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]  # a config's dtype field: `--help` lists these
DTYPE_NAMES: tuple[str, ...] = get_args(DtypeName)


def resolve_device(device: str) -> torch.device:
    """`auto` → the GPU when there is one, else the CPU. A GPU that torch cannot see is refused here, before a
    model is moved to it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for, but this torch sees no CUDA GPU; use auto or cpu")
    return chosen


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "auto") -> torch.dtype:
    """`auto` → bfloat16 on a GPU that supports it (half the memory of float32, no fp16 overflow), else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise UserError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, not {dtype!r}")
    if dtype != "auto":
        return DTYPES[dtype]
    where = resolve_device(device) if isinstance(device, str) else device
    return torch.bfloat16 if where.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def _check_exists(name: str, what: str) -> None:
    """A name that looks like a path must be a folder; anything else is taken for a hub id."""
    path = Path(name).expanduser()
    if path.is_file():
        raise UserError(f"{what} {name} is a file; give the model's folder (or a hub id)")
    if (name.startswith((".", "/", "~")) or path.exists()) and not path.is_dir():
        raise UserError(f"{what} folder {name} does not exist")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"{what} folder {name} holds no config.json: it is not a saved model")


def token_id_list(ids: int | Sequence[int] | None) -> list[int]:
    """One id, several or none (as Hugging Face configs write them) as a list of ints."""
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


def stop_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS first, then those of the model's generation config.

    Chat models declare several there (Llama-3.1-Instruct ends a turn with <|eot_id|>, not with the tokenizer's
    EOS); stopping at the tokenizer's EOS alone runs past the end of the answer.
    """
    config = getattr(model, "generation_config", None)
    declared = token_id_list(tokenizer.eos_token_id) + token_id_list(getattr(config, "eos_token_id", None))
    return list(dict.fromkeys(declared))


def _auto_tokenizer(name: str, what: str) -> PreTrainedTokenizerBase:
    _check_exists(name, what)
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:  # ValueError: a folder without a tokenizer's files
        raise UserError(f"cannot load the tokenizer of the {what} {name!r} ({str(err).splitlines()[0]})") from None


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """π_ref's tokenizer, left-padded, with a pad token (EOS when it has none)."""
    tokenizer = _auto_tokenizer(name, "reference model")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _load_causal_lm(name: str, what: str, dtype: torch.dtype) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as err:  # ValueError: a config of no causal LM
        raise UserError(f"cannot load the {what} {name!r} ({str(err).splitlines()[0]})") from None


def load_reference(
    name: str, device: str = "auto", dtype: str | torch.dtype = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """π_ref and its tokenizer from a local folder or a hub id (the hub only where it can be reached)."""
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = load_tokenizer(name)
    model = _load_causal_lm(name, "reference model", torch_dtype)
    return model.to(resolve_device(device)).eval(), tokenizer


def load_value_base(name: str, ref_tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype) -> PreTrainedModel:
    """A separate causal LM to build the value model from (on the CPU); it must share π_ref's token ids."""
    ours, theirs = tokenizer_digest(ref_tokenizer), tokenizer_digest(_auto_tokenizer(name, "value model base"))
    if ours != theirs:
        raise UserError(
            f"the value model base {name} has a different tokenizer than π_ref (vocabulary digest {theirs} vs "
            f"{ours}); the value model must share π_ref's token ids"
        )
    return _load_causal_lm(name, "value model base", dtype).eval()


def load_value_model(
    path: str,
    tokenizer: PreTrainedTokenizerBase,
    device: str = "auto",
    dtype: str | torch.dtype = "float32",
    ref_model: PreTrainedModel | None = None,
) -> ValueModel:
    """A saved ValueModel, checked against π_ref's tokenizer (a shared-trunk one reads `ref_model`'s layers)."""
    if not Path(path).expanduser().is_dir():
        raise UserError(f"value model folder {path} does not exist")
    torch_dtype = resolve_dtype(dtype, device)
    folder = Path(path).expanduser()
    model = ValueModel.from_pretrained(folder, tokenizer=tokenizer, dtype=torch_dtype, ref_model=ref_model)
    return model.to(resolve_device(device)).eval()

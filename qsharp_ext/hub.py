"""What a saved value model shows the Hugging Face ecosystem: its config.json, its model card, hub downloads.

A value-model folder's `config.json` is not the backbone's: its `model_type` is `qsharp_value_model` and it
holds the backbone's config inside (`backbone_config`), with how the model was trained (`training`). So
`AutoModel.from_pretrained(folder)` never silently loads the backbone alone: once `qsharp_ext.value_model`
is imported, the Auto classes know the type and return the whole ValueModel; before that, transformers
refuses the unknown model type. Folders saved before this layout (the backbone's own config.json) still load.

It knows file names, configs, model cards and the hub; what the model computes is value_model.py's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from transformers import AutoConfig, AutoModel, PretrainedConfig

from qsharp_ext.errors import UserError

MODEL_TYPE = "qsharp_value_model"
PAPER = "https://arxiv.org/abs/2502.20548"
HUB_OPTIONS = ("revision", "token", "cache_dir", "local_files_only", "force_download")


class ValueModelConfig(PretrainedConfig):
    """The top-level config.json of a value-model folder, as transformers' AutoConfig reads it."""

    model_type = MODEL_TYPE


class AutoValueModel:
    """What `AutoModel.from_pretrained` builds for a value-model folder: the whole ValueModel."""

    config_class = ValueModelConfig

    @classmethod
    def from_pretrained(cls, name: str | Path, *args: Any, **kwargs: Any):
        from qsharp_ext.value_model import ValueModel

        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        hub = {k: kwargs[k] for k in HUB_OPTIONS if kwargs.get(k) is not None}
        return ValueModel.from_pretrained(name, dtype=dtype if isinstance(dtype, torch.dtype) else None, **hub)


def register_auto_classes() -> None:
    """Teach AutoConfig / AutoModel the value-model folder (idempotent)."""
    AutoConfig.register(MODEL_TYPE, ValueModelConfig, exist_ok=True)
    AutoModel.register(ValueModelConfig, AutoValueModel, exist_ok=True)


def looks_local(name: str) -> bool:
    """A path rather than a hub id: it exists, or starts like a path (`.`, `/`, `~`), or has more than one `/`."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1


def resolve_folder(name: str | Path, **hub: Any) -> Path:
    """The local folder of a value model given as a folder or a hub id (downloaded, or found in the hub cache).

    `hub` takes snapshot_download's revision, token, cache_dir, local_files_only and force_download.
    """
    text = str(name)
    if looks_local(text):
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise UserError(f"{text} is not a saved value model: the folder does not exist")
        return folder
    unknown = sorted(set(hub) - set(HUB_OPTIONS))
    if unknown:
        raise UserError(f"unknown hub option(s) {', '.join(unknown)}; known: {', '.join(HUB_OPTIONS)}")
    try:
        return Path(snapshot_download(repo_id=text, **hub))
    except HFValidationError:
        raise UserError(f"value model {text!r} is neither a folder nor a hub id (owner/name)") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot download the value model {text!r} from the hub ({reason}), and no folder of that name exists"
        ) from None


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights: every tensor's name, shape and dtype and up to 4,096 evenly spaced
    values of it. Cheap for 8B parameters, and different for a fine-tuned or re-quantized copy; not a full hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)][:4096].float().cpu()
        digest.update(f"{name}\x00{tuple(tensor.shape)}\x00{tensor.dtype}\x00".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def model_card(head: dict[str, Any], backbone: dict[str, Any], training: dict[str, Any] | None, repo_id: str) -> str:
    """README.md of a value-model folder (YAML front matter for the hub, then what it is, how to use it and how
    it was trained when the training run recorded it)."""
    kind = head["kind"]
    support = f", {head['n_atoms']} atoms on [{head['v_min']}, {head['v_max']}]" if kind == "histogram" else ""
    layers = backbone.get("num_hidden_layers", backbone.get("n_layer"))
    lines = [
        "---",
        "library_name: qsharp-ext",
        "tags: [qsharp, value-model, guided-decoding]",
        "---",
        "",
        "# Q♯ value model",
        "",
        f"A value model for Q♯ value-guided decoding ([Zhou et al. 2025]({PAPER})): it predicts the distribution",
        "of the final reward that a frozen reference model π_ref reaches from each prefix, and steers π_ref token by",
        "token toward the KL-regularized optimal policy. It is not a language model: load it with `qsharp-ext`.",
        "",
        "```python",
        "from qsharp_ext import ValueModel, guided_generate",
        "",
        f'value_model = ValueModel.from_pretrained("{repo_id}", tokenizer=tokenizer)  # π_ref\'s tokenizer',
        "out = guided_generate(ref_model, tokenizer, prompts, value_model, etas=[0.1])",
        "```",
        "",
        "## Model",
        "",
        f"- head: {kind} ({head['parameterization'].upper()}-type{support})",
        f"- backbone: {backbone.get('model_type')}, {layers} layers, hidden size {backbone.get('hidden_size')}",
        f"- tokenizer digest: {head.get('tokenizer_digest')} (π_ref's tokenizer must match it)",
    ]
    if head.get("shared_layers") is not None:
        lines.append(
            f"- shared trunk: the backbone is π_ref's own first {head['shared_layers']} layers (weights fingerprint "
            f"{head.get('trunk_fingerprint')}), not saved here: load it with "
            "`ValueModel.from_pretrained(folder, ref_model=ref_model)`"
        )
    if training:
        lines += ["", "## Training", ""]
        lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in training.items() if key != "metrics"]
        metrics = {k: v for k, v in (training.get("metrics") or {}).items() if v is not None}
        if metrics:
            lines += ["", "| held-out metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"

"""A value model whose backbone is π_ref's own frozen layers reads π_ref's hidden states instead of a copy's.

When training kept the backbone frozen (`backbone_lr_scale` 0), took it from π_ref (no `value_model_base`)
and added no layers, the value model's hidden state after its L layers *is* π_ref's after its first L layers,
through π_ref's final norm. Such a model is saved as its head plus which π_ref it reads (the layer count and a
fingerprint of those layers' weights), and loaded with that π_ref (`ValueModel.from_pretrained(folder,
ref_model=ref)`). At decoding, a Q-type head then runs on the hidden state π_ref's own forward pass computed:
one backbone pass for both models, and the head only for the k candidates' rows (k·H MACs, not V·H).

It knows which weights a trunk is made of and how to read it from π_ref's outputs; not how to decode.
"""

from __future__ import annotations

import hashlib
import re

import torch
from torch import nn
from transformers import PreTrainedModel

from qsharp_ext.errors import UserError

FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "norm_f")  # Llama/Qwen2/Mistral/Gemma, GPT-2/GPT-J, Phi, Mamba


def layer_count(ref_model: PreTrainedModel) -> int:
    return ref_model.base_model.config.num_hidden_layers


def final_norm(ref_model: PreTrainedModel) -> nn.Module:
    """π_ref's norm after its last layer, which a truncated backbone applies after its own last layer."""
    base = ref_model.base_model
    norm = next((getattr(base, name) for name in FINAL_NORMS if isinstance(getattr(base, name, None), nn.Module)), None)
    if norm is None:
        raise UserError(
            f"a value model cannot share the layers of a {type(ref_model).__name__}: its final norm is none of "
            f"{', '.join(FINAL_NORMS)}; train it with its own backbone (backbone_lr_scale > 0 or extra_layers > 0)"
        )
    return norm


def layer_index(parameter_name: str) -> int | None:
    """The layer a parameter belongs to (`layers.3.mlp…`, GPT-2's `h.3.attn…`), or None outside the layers."""
    match = re.search(r"(?:^|\.)(?:layers|h)\.(\d+)\.", parameter_name)
    return int(match.group(1)) if match else None


def in_first_layers(parameter_name: str, layers: int) -> bool:
    """Whether a base model's parameter is read by its first `layers` layers (embeddings and norms always are)."""
    index = layer_index(parameter_name)
    return index is None or index < layers


def trunk_tensors(ref_model: PreTrainedModel, layers: int) -> dict[str, torch.Tensor]:
    """The weights of π_ref's first `layers` layers: embeddings, those layers, the final norm."""
    return {k: v for k, v in ref_model.base_model.state_dict().items() if in_first_layers(k, layers)}


def trunk_fingerprint(ref_model: PreTrainedModel, layers: int) -> str:
    """A short hash of the shared weights that does not depend on their dtype (a float32 π_ref and its bfloat16
    copy share a trunk): every tensor's name and shape and up to 4,096 evenly spaced values rounded to bfloat16."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trunk_tensors(ref_model, layers).items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)][:4096].to(torch.bfloat16).float().cpu()
        digest.update(f"{name}\x00{tuple(tensor.shape)}\x00".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def check_trunk(ref_model: PreTrainedModel, layers: int, fingerprint: str | None, where: object) -> None:
    """One sentence when `ref_model` is not the π_ref whose layers the value model at `where` was trained on."""
    total = layer_count(ref_model)
    if not 1 <= layers <= total:
        raise UserError(f"the value model at {where} reads {layers} layers of π_ref, which has {total}")
    found = trunk_fingerprint(ref_model, layers)
    if fingerprint is not None and found != fingerprint:
        raise UserError(
            f"the value model at {where} reads the first {layers} layers of another π_ref (weights fingerprint "
            f"{fingerprint}, this π_ref's {found}): load it with the π_ref it was trained on"
        )


def trunk_features(ref_model: PreTrainedModel, hidden_states: tuple[torch.Tensor, ...], layers: int) -> torch.Tensor:
    """The value model's last hidden state from π_ref's `output_hidden_states` (embeddings, then one entry per
    layer, the last one already through the final norm)."""
    if layers == layer_count(ref_model):
        return hidden_states[-1]
    return final_norm(ref_model)(hidden_states[layers])

"""ValueModel: a Hugging Face causal-LM backbone plus a head that predicts the reward distribution Z.

Heads (`kind`): `bernoulli` (one logit, p = P(reward = 1)), `histogram` (n atoms on [v_min, v_max], the
atoms a registered buffer) and `mean` (E[z], the controlled-decoding baseline).
Parameterizations: `v` (default) — the hidden state at position t scores the prefix that ends with token
t, so k candidate next tokens are scored by one pass of k tokens; `q` — the hidden state at t gives one
distribution per vocabulary token (the prefix extended by each possible next token) from a 1-token pass.

It knows how to build, run, save and load itself; it knows nothing of sampling (see generate.py).
Saved folders are HF-native (huggingface_hub's ModelHubMixin: `save_pretrained`, `from_pretrained` of a
folder or a hub id, `push_to_hub`): the backbone's weights (`model.safetensors`), `value_head.safetensors`,
`qsharp_value.json` (head kind, atoms, parameterization, tokenizer digest), a `config.json` of model type
`qsharp_value_model` with the backbone's config inside, and a model card (README.md); see hub.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext import distributions as D
from qsharp_ext import hub
from qsharp_ext import shared_trunk as trunk
from qsharp_ext.errors import UserError
from qsharp_ext.io import atomic_write_text

HeadKind = Literal["bernoulli", "histogram", "mean"]
Parameterization = Literal["v", "q"]
HeadInit = Literal["fresh", "linear", "lm_head"]
HEAD_INITS: tuple[str, ...] = get_args(HeadInit)
HEAD_FILE, META_FILE, CONFIG_FILE, CARD_FILE = "value_head.safetensors", "qsharp_value.json", "config.json", "README.md"


@dataclasses.dataclass
class ValueHeadConfig:
    """What the head predicts and how; saved beside the weights."""

    kind: HeadKind = "bernoulli"
    parameterization: Parameterization = "v"
    n_atoms: int = 51
    v_min: float = 0.0
    v_max: float = 1.0
    vocab_size: int = 0
    tokenizer_digest: str | None = None
    shared_layers: int | None = None
    """None: the model has its own backbone. L: its backbone is π_ref's frozen first L layers, read from π_ref
    itself (saved as the head alone, loaded with `ref_model=`; see shared_trunk.py)."""
    trunk_fingerprint: str | None = None
    """Fingerprint of the π_ref layers a shared-trunk model reads (shared_trunk.trunk_fingerprint)."""

    def __post_init__(self) -> None:
        if self.kind not in ("bernoulli", "histogram", "mean"):
            raise UserError(f"value head kind must be bernoulli, histogram or mean, not {self.kind!r}")
        if self.parameterization not in ("v", "q"):
            raise UserError(f"parameterization must be 'v' or 'q', not {self.parameterization!r}")
        if self.kind == "bernoulli" and (self.v_min, self.v_max) != (0.0, 1.0):
            raise UserError("a bernoulli head models rewards in {0, 1}: v_min must be 0 and v_max 1")

    @property
    def outputs_per_token(self) -> int:
        return self.n_atoms if self.kind == "histogram" else 1


_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer → (its size, its digest)


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the token → id mapping: equal digests mean the same vocabulary and ids.

    Kept per tokenizer object while its size is unchanged (adding tokens changes it): every guided call checks
    the value model's tokenizer, and hashing a 128k vocabulary takes about 0.2 s.
    """
    cached = _DIGESTS.get(tokenizer)
    if cached is not None and cached[0] == len(tokenizer):
        return cached[1]
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    _DIGESTS[tokenizer] = (len(tokenizer), digest)
    return digest


def truncated_backbone(
    ref_model: PreTrainedModel, num_layers: int | None, extra_layers: int = 0, share: bool = False
) -> PreTrainedModel:
    """π_ref's embeddings and first `num_layers` layers (its base model, without the LM head; 0 or None: all of
    them), copied, then `extra_layers` freshly initialised layers of the same kind on top (before the final norm).
    With `share` (no extra layers) the weights are π_ref's own tensors, not copies: no memory, no time."""
    base = ref_model.base_model
    total = base.config.num_hidden_layers
    if num_layers is not None and (isinstance(num_layers, bool) or not isinstance(num_layers, int)):
        raise UserError(f"num_layers must be an integer (0 or None: all layers), got {num_layers!r}")
    num_layers = num_layers or total
    if not 1 <= num_layers <= total:
        raise UserError(f"num_layers must be between 1 and π_ref's {total} layers (0 or None: all), got {num_layers}")
    if extra_layers < 0:
        raise UserError(f"extra_layers must not be negative, got {extra_layers}")
    depth = num_layers + extra_layers
    fields = base.config.to_dict()
    for key in ("num_hidden_layers", "n_layer"):  # GPT-2 spells it n_layer
        if key in fields:
            fields[key] = depth
    if isinstance(fields.get("layer_types"), list):  # per-layer attention kinds (Qwen2 and newer configs)
        kinds = fields["layer_types"][:num_layers]
        fields["layer_types"] = kinds + kinds[-1:] * extra_layers
    config = base.config.__class__.from_dict(fields)
    copied = trunk.trunk_tensors(ref_model, num_layers)
    if share:
        with torch.device("meta"):  # nothing allocated: every tensor is then π_ref's
            backbone = AutoModel.from_config(config)
        backbone.load_state_dict(copied, strict=True, assign=True)
        buffers = dict(base.named_buffers())  # the non-persistent ones (rotary frequencies) are not in the state
        for name, _ in list(backbone.named_buffers()):
            owner, _, leaf = name.rpartition(".")
            setattr(backbone.get_submodule(owner), leaf, buffers[name])
        return backbone.eval()
    backbone = AutoModel.from_config(config)
    missing, _ = backbone.load_state_dict(copied, strict=False)
    missing = [k for k in missing if trunk.in_first_layers(k, num_layers)]  # not an extra layer's
    if missing:
        raise RuntimeError(f"could not copy π_ref's first layers: missing {missing[:3]}")
    return backbone.to(dtype=next(base.parameters()).dtype)


class ValueModel(nn.Module, ModelHubMixin, library_name="qsharp-ext", tags=["qsharp", "value-model"]):
    """Backbone + head. `forward` returns head outputs per position: (B, T) or (B, T, n); Q-type adds V.

    `training_info` (a dict, or None) says how the model was trained; training sets it, saving keeps it in
    config.json and the model card.
    """

    def __init__(self, backbone: PreTrainedModel, head_config: ValueHeadConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_config = head_config
        self.training_info: dict[str, Any] | None = None
        self._reference: weakref.ref | None = None  # the π_ref object a shared-trunk model reads
        if head_config.vocab_size <= 0:
            head_config.vocab_size = backbone.config.vocab_size
        hidden = backbone.config.hidden_size
        per_token = head_config.outputs_per_token
        out = per_token * (head_config.vocab_size if head_config.parameterization == "q" else 1)
        self.head = nn.Linear(hidden, out).to(next(backbone.parameters()).dtype)
        nn.init.normal_(self.head.weight, std=0.02 / hidden**0.5)
        nn.init.zeros_(self.head.bias)
        atoms = D.make_atoms(head_config.v_min, head_config.v_max, max(head_config.n_atoms, 2))
        self.register_buffer("atoms", atoms, persistent=False)

    # ------------------------------------------------------------------------------------------ build

    @classmethod
    def from_reference(
        cls,
        ref_model: PreTrainedModel,
        num_layers: int | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        head_init: HeadInit = "fresh",
        extra_layers: int = 0,
        share_trunk: bool = False,
        **head,
    ) -> ValueModel:
        """A value model from π_ref's embeddings and first `num_layers` layers (0 or None: all of them, as in
        TrainConfig and the command line; plus `extra_layers` fresh ones on top) and a head: a fresh one (small
        weights), one at torch.nn.Linear's scale (head_init="linear", see `reset_head`), or (head_init="lm_head")
        π_ref's own LM head, see `copy_lm_head`. `share_trunk` (no extra layers; the backbone must then stay
        frozen) makes it read π_ref's own layers: saved as its head, decoded from π_ref's pass (shared_trunk.py)."""
        check_head_init(head_init)
        if tokenizer is not None:
            check_reference_tokenizer(ref_model, tokenizer)
        config = ValueHeadConfig(**head)
        config.vocab_size = ref_model.config.vocab_size
        config.tokenizer_digest = tokenizer_digest(tokenizer) if tokenizer is not None else None
        if share_trunk and extra_layers:
            raise UserError("a value model that shares π_ref's layers cannot add layers of its own (extra_layers)")
        backbone = truncated_backbone(ref_model, num_layers, extra_layers, share=share_trunk)
        if share_trunk:
            trunk.final_norm(ref_model)  # refused here, before any training, for an architecture it cannot read
            config.shared_layers = backbone.config.num_hidden_layers
            config.trunk_fingerprint = trunk.trunk_fingerprint(ref_model, config.shared_layers)
        model = cls(backbone, config)
        if share_trunk:
            model._reference = weakref.ref(ref_model)
        if head_init == "lm_head":
            model.copy_lm_head(ref_model)
        elif head_init == "linear":
            model.reset_head()
        return model

    def reset_head(self) -> None:
        """Start the head's weights at torch.nn.Linear's scale, U(±1/√H), the bias at 0.

        Why: the fresh head's weights (std 0.02/√H) are so small that Adam's first steps, each of size lr,
        turn their direction around many times over, and the backbone, whose gradient runs through them,
        gets no consistent signal meanwhile. On the star graph (`python/stargraph_hops.py`, π_ref's layers,
        batch 64, lr 3e-4) this start learned the last node and the node before it within 32k walks; the
        small one had learned only the last node, and that partly (0.83), after 192k.
        """
        self.head.reset_parameters()
        nn.init.zeros_(self.head.bias)

    def copy_lm_head(self, source: PreTrainedModel) -> None:
        """Start a Q-type Bernoulli head as `source`'s LM head, centred over the vocabulary.

        Why: with all of `source`'s layers as the backbone, the head's logit for next token y is then
        source's logit of y minus the vocabulary mean, so the value model starts out ranking next tokens
        as π_ref does (its likely tokens first) and training only has to learn how far that ranking predicts
        the reward. The logits are tens of nats, far from any reward rate: training shifts the bias to the
        data's rate before the first step (`training.calibrate_bias`).
        """
        if not (self.is_q_type and self.kind == "bernoulli"):
            raise UserError("head_init lm_head needs a Q-type bernoulli head (parameterization q, kind bernoulli)")
        layers = self.backbone.config.num_hidden_layers
        if layers != source.config.num_hidden_layers:
            raise UserError(
                f"head_init lm_head needs all {source.config.num_hidden_layers} layers of the model it copies "
                f"(the LM head reads the last layer), not {layers}: set num_layers to 0 or None (all layers)"
            )
        weight, bias = lm_head_weights(source, self.head)
        with torch.no_grad():
            self.head.weight.copy_(weight - weight.mean(0, keepdim=True))  # (V, H)
            self.head.bias.copy_(bias - bias.mean())

    # -------------------------------------------------------------------------------------------- run

    @property
    def kind(self) -> HeadKind:
        return self.head_config.kind

    @property
    def is_q_type(self) -> bool:
        return self.head_config.parameterization == "q"

    def reads(self, ref_model: PreTrainedModel) -> bool:
        """Whether this is a shared-trunk model built or loaded from this very π_ref object (then guided decoding
        reads π_ref's hidden states; with any other π_ref it runs its own copy of the layers, as a second model)."""
        return self._reference is not None and self._reference() is ref_model

    def candidate_outputs(self, hidden: torch.Tensor, cand_ids: torch.Tensor) -> torch.Tensor:
        """Q-type head outputs of the candidates `cand_ids` (N, k) from the prefix's hidden state (N, H):
        (N, k) / (N, k, n), the head's rows of those tokens only (k·n·H MACs, not V·n·H)."""
        n = self.head_config.outputs_per_token
        rows = (cand_ids.unsqueeze(-1) * n + torch.arange(n, device=cand_ids.device)).flatten(1)  # (N, k·n)
        hidden = hidden.to(self.head.weight.dtype)
        out = (self.head.weight[rows] @ hidden.unsqueeze(-1)).squeeze(-1) + self.head.bias[rows]  # (N, k·n)
        out = out.float().unflatten(-1, (cand_ids.shape[1], n))
        return out.squeeze(-1) if n == 1 else out

    def head_outputs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head on hidden states (..., H) → (...) / (..., n); Q-type → (..., V) / (..., V, n)."""
        out = self.head(hidden).float()
        if self.is_q_type:
            out = out.unflatten(-1, (self.head_config.vocab_size, self.head_config.outputs_per_token))
        else:
            out = out.unflatten(-1, (1, self.head_config.outputs_per_token)).squeeze(-2)
        return out.squeeze(-1) if self.head_config.outputs_per_token == 1 else out

    def hidden(self, input_ids: torch.Tensor, **backbone_kwargs) -> tuple[torch.Tensor, object]:
        """The backbone's last hidden states (B, T, H) and its KV cache (when `use_cache=True`)."""
        result = self.backbone(input_ids=input_ids, **backbone_kwargs)
        # the field is `cache` in newer transformers (reading `past_key_values` there warns), before that not
        name = "cache" if "cache" in {f.name for f in dataclasses.fields(result)} else "past_key_values"
        return result.last_hidden_state, getattr(result, name, None)

    def forward(self, input_ids: torch.Tensor, **backbone_kwargs) -> tuple[torch.Tensor, object]:
        """Head outputs at every position and the backbone's KV cache (when `use_cache=True`)."""
        hidden, cache = self.hidden(input_ids, **backbone_kwargs)
        return self.head_outputs(hidden), cache

    def log_offset(self, head_out: torch.Tensor, eta: float | torch.Tensor) -> torch.Tensor:
        """ln E[exp(z/η)] from head outputs (reference numerics; the decoding step fuses this)."""
        if self.kind == "bernoulli":
            return D.bernoulli_log_offset(head_out, eta)
        if self.kind == "histogram":
            return D.histogram_log_offset(head_out, self.atoms, eta)
        return D.mean_log_offset(head_out, eta)

    def expected_reward(self, head_out: torch.Tensor) -> torch.Tensor:
        """E[z] under the predicted distribution (best-of-n ranking, calibration)."""
        if self.kind == "bernoulli":
            return torch.sigmoid(head_out)
        if self.kind == "histogram":
            return (torch.softmax(head_out, -1) * self.atoms).sum(-1)
        return head_out

    def loss(self, head_out: torch.Tensor, reward: torch.Tensor, fit: str = "likelihood") -> torch.Tensor:
        """BCE (bernoulli), two-hot NLL (histogram) or MSE (mean) against final rewards.

        fit="mse" regresses the head's expected reward instead, whatever the head (the paper's ablation of
        the distributional loss): for 0/1 rewards the Bernoulli head then still yields E[exp(z/η)].
        """
        if fit == "mse":
            return D.mean_loss(self.expected_reward(head_out), reward, self.head_config.v_min, self.head_config.v_max)
        if self.kind == "bernoulli":
            return D.bernoulli_loss(head_out, reward)
        if self.kind == "histogram":
            return D.histogram_loss(head_out, self.atoms, reward)
        return D.mean_loss(head_out, reward, self.head_config.v_min, self.head_config.v_max)

    # ------------------------------------------------------------------------------------ save / load

    def save_pretrained(
        self, save_directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None, **hub_kwargs: Any
    ) -> str | None:
        """An HF-native folder (see the module's docstring) with a model card; with π_ref's `tokenizer`, its
        digest is recorded so that loading with another vocabulary is refused. `push_to_hub=True, repo_id=...`
        (and ModelHubMixin's other keywords) also upload it."""
        if tokenizer is not None:
            self.head_config.tokenizer_digest = tokenizer_digest(tokenizer)
        return super().save_pretrained(Path(save_directory), **hub_kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        if self.head_config.shared_layers is None:  # a shared trunk is π_ref's: not saved again
            self.backbone.save_pretrained(save_directory)
        backbone_config = json.loads(self.backbone.config.to_json_string(use_diff=False))
        head_state = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head_state, str(save_directory / HEAD_FILE))
        atomic_write_text(save_directory / META_FILE, json.dumps(dataclasses.asdict(self.head_config), indent=2) + "\n")
        config = {"model_type": hub.MODEL_TYPE, "backbone_config": backbone_config, "training": self.training_info}
        atomic_write_text(save_directory / CONFIG_FILE, json.dumps(config, indent=2, default=str) + "\n")
        (save_directory / CARD_FILE).unlink(missing_ok=True)  # the card describes this model, not an earlier one

    def generate_model_card(self, *args: Any, repo_id: str | None = None, **kwargs: Any) -> ModelCard:
        """README.md: what the model is, how to load it, its head and backbone, how it was trained."""
        backbone = json.loads(self.backbone.config.to_json_string(use_diff=False))
        head = dataclasses.asdict(self.head_config)
        return ModelCard(hub.model_card(head, backbone, self.training_info, repo_id or "OWNER/NAME"))

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload to the hub as `repo_id` (huggingface_hub's ModelHubMixin.push_to_hub; `token`, `private`,
        `commit_message` ...); the model card names the repository."""
        card = {"repo_id": repo_id, **(kwargs.pop("model_card_kwargs", None) or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dtype: torch.dtype | None = None,
        ref_model: PreTrainedModel | None = None,
        **hub_kwargs: Any,
    ) -> ValueModel:
        """Load a saved value model from a folder or a hub id (`revision`, `token`, `cache_dir`,
        `local_files_only`, `force_download` go to huggingface_hub); with π_ref's `tokenizer`, refuse one
        trained with another vocabulary. A shared-trunk model (saved as its head, see shared_trunk.py) needs the
        π_ref it reads as `ref_model`; other models ignore it."""
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path), tokenizer=tokenizer, dtype=dtype,
                                    ref_model=ref_model, **hub_kwargs)  # fmt: skip

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dtype: torch.dtype | None = None,
        ref_model: PreTrainedModel | None = None,
        **hub_kwargs: Any,
    ) -> ValueModel:
        hub_kwargs = {k: v for k, v in hub_kwargs.items() if v is not None and k not in ("proxies", "resume_download")}
        path = hub.resolve_folder(model_id, **hub_kwargs)
        if not (path / META_FILE).is_file():
            raise UserError(f"{model_id} is not a saved value model (no {META_FILE})")
        head_config = ValueHeadConfig(**json.loads((path / META_FILE).read_text()))
        if tokenizer is not None:
            check_tokenizer(head_config, tokenizer, model_id)
        if ref_model is not None:
            check_vocabulary(head_config, ref_model, model_id)
        config = json.loads((path / CONFIG_FILE).read_text()) if (path / CONFIG_FILE).is_file() else {}
        if head_config.shared_layers is not None:
            backbone = shared_backbone(head_config, ref_model, model_id)
            backbone = backbone.to(dtype) if dtype else backbone
        else:
            options = {"dtype": dtype} if dtype else {}
            if config.get("model_type") == hub.MODEL_TYPE:  # the backbone's config sits inside
                fields = dict(config["backbone_config"])
                options["config"] = AutoConfig.for_model(fields.pop("model_type"), **fields)
            backbone = AutoModel.from_pretrained(path, **options)  # folders saved before: the backbone's config.json
        model = cls(backbone, head_config)
        model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        if head_config.shared_layers is not None:
            model._reference = weakref.ref(ref_model)
        model.training_info = config.get("training")
        return model.eval()


def reads_reference(folder: str | Path) -> bool:
    """Whether the saved value model in `folder` is a shared-trunk one (it needs its π_ref to load)."""
    return json.loads((Path(folder) / META_FILE).read_text()).get("shared_layers") is not None


def shared_backbone(head_config: ValueHeadConfig, ref_model: PreTrainedModel | None, where: object) -> PreTrainedModel:
    """The layers a shared-trunk model reads, copied from `ref_model` once it is checked to be their π_ref."""
    if ref_model is None:
        raise UserError(
            f"the value model at {where} reads π_ref's own first {head_config.shared_layers} layers and holds only "
            "its head: load it with ValueModel.from_pretrained(folder, ref_model=<π_ref>)"
        )
    trunk.check_trunk(ref_model, head_config.shared_layers, head_config.trunk_fingerprint, where)
    return truncated_backbone(ref_model, head_config.shared_layers, share=True)


def lm_head_weights(source: PreTrainedModel, head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """`source`'s LM head as (weight (V, H), bias (V,), zeros when it has none) in `head`'s dtype, refused
    with one sentence unless it has `head`'s shape (one output per token)."""
    lm_head = source.get_output_embeddings()
    if lm_head is None or lm_head.weight.shape != head.weight.shape:
        raise UserError("the source model has no LM head of the value head's shape (vocabulary, hidden)")
    weight = lm_head.weight.detach().to(head.weight.dtype)
    bias = getattr(lm_head, "bias", None)
    return weight, (bias.detach().to(head.bias.dtype) if bias is not None else torch.zeros_like(head.bias))


def check_head_init(head_init: str) -> None:
    if head_init not in HEAD_INITS:
        raise UserError(f"head_init must be one of {', '.join(HEAD_INITS)}, not {head_init!r}")


def check_reference_tokenizer(ref_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """One clear sentence when `tokenizer` has more tokens than π_ref's vocabulary: it is another model's."""
    if len(tokenizer) > ref_model.config.vocab_size:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but π_ref's vocabulary only {ref_model.config.vocab_size}: "
            "pass π_ref's own tokenizer"
        )


def check_vocabulary(head_config: ValueHeadConfig, ref_model: PreTrainedModel, where: object) -> None:
    """A value model that records no tokenizer cannot be checked against π_ref's; a vocabulary of another size
    then means another model's token ids, used silently. One sentence and the way to record the tokenizer."""
    if head_config.tokenizer_digest is None and head_config.vocab_size != ref_model.config.vocab_size:
        raise UserError(
            f"the value model ({where}) records no tokenizer and has a vocabulary of {head_config.vocab_size}, "
            f"π_ref one of {ref_model.config.vocab_size}: build it with from_reference(ref_model, ..., tokenizer) "
            "(or save it with save_pretrained(folder, tokenizer)) so that the two can be checked"
        )


def check_tokenizer(head_config: ValueHeadConfig, tokenizer: PreTrainedTokenizerBase, where: object) -> None:
    """One clear sentence when the value model and π_ref do not share token ids."""
    digest = tokenizer_digest(tokenizer)
    if head_config.tokenizer_digest is not None and head_config.tokenizer_digest != digest:
        raise UserError(
            f"the value model ({where}) was trained with a different tokenizer than π_ref's "
            f"(vocabulary digest {head_config.tokenizer_digest} vs {digest}); they must share token ids"
        )
    if len(tokenizer) > head_config.vocab_size:
        raise UserError(
            f"π_ref's tokenizer has {len(tokenizer)} tokens but the value model ({where}) knows only "
            f"{head_config.vocab_size}; they must share token ids"
        )


hub.register_auto_classes()  # AutoModel.from_pretrained(value-model folder) → the whole ValueModel

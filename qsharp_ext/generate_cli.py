"""`qsharp-ext generate`: prompts in, JSONL of guided completions (with exact KL to π_ref) out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from qsharp_ext.config import check_field_types
from qsharp_ext.decode_options import SamplingOptions, check_sampling_options
from qsharp_ext.errors import UserError
from qsharp_ext.eta import check_etas
from qsharp_ext.generate import guided_generate
from qsharp_ext.io import atomic_write_text, check_output_file
from qsharp_ext.loading import load_reference, load_value_model


@dataclasses.dataclass
class GenerateConfig(SamplingOptions):
    """Sample completions from π_ref guided by a value model (Q♯), for one or several η."""

    ref_model: str
    """π_ref: a local folder or a Hugging Face model id."""
    out: Path = Path("completions.jsonl")
    """JSONL file to write: one line per (prompt, η, sample)."""
    value_model: str | None = None
    """Folder of a saved ValueModel; needed unless every η is None."""
    prompt: tuple[str, ...] = ()
    """Prompts given on the command line, as raw text: no chat template is applied (write the template's text
    yourself, or give chat messages to the Python API's guided_generate)."""
    prompts_file: Path | None = None
    """A text file with one prompt per line (added to --prompt)."""
    etas: tuple[float | None, ...] = (0.1,)
    """KL-regularization strengths, each positive; None samples π_ref unguided (`None` on the command line,
    `null` in YAML)."""
    num_samples: int = 1
    """Completions per prompt and per η."""
    max_new_tokens: int = 128
    """Tokens to generate at most per completion."""

    def __post_init__(self) -> None:
        check_field_types(self)


def read_prompts(cfg: GenerateConfig) -> list[str]:
    prompts = list(cfg.prompt)
    if cfg.prompts_file is not None:
        if not cfg.prompts_file.is_file():
            raise UserError(f"prompts file {cfg.prompts_file} does not exist")
        prompts += [line for line in cfg.prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        given = f"the prompts file {cfg.prompts_file} holds no non-empty line" if cfg.prompts_file else "no prompts"
        raise UserError(f"{given}: give --prompt TEXT or --prompts-file FILE (one prompt per line)")
    return prompts


def check_config(cfg: GenerateConfig) -> None:
    """One clear sentence for a config that cannot work, before any model loads."""
    check_output_file(cfg.out)
    check_sampling_options(cfg, cfg.max_new_tokens)
    check_etas(cfg.etas)
    if cfg.num_samples < 1:
        raise UserError(f"num_samples must be at least 1, got {cfg.num_samples}")


def run_generate(cfg: GenerateConfig) -> int:
    """Write the completions; return how many were written."""
    check_config(cfg)
    prompts = read_prompts(cfg)
    ref, tokenizer = load_reference(cfg.ref_model, cfg.device, cfg.dtype)
    value = load_value_model(cfg.value_model, tokenizer, cfg.device, cfg.dtype, ref) if cfg.value_model else None
    out = guided_generate(
        ref, tokenizer, prompts, value, etas=cfg.etas, num_samples=cfg.num_samples,
        max_new_tokens=cfg.max_new_tokens, top_k=cfg.top_k, temperature=cfg.temperature, top_p=cfg.top_p,
        seed=cfg.seed, progress=True,
    )  # fmt: skip
    lines = []
    for row, text in enumerate(out.texts(tokenizer)):
        lines.append(json.dumps({
            "prompt_index": out.prompt_index[row].item(), "prompt": prompts[out.prompt_index[row]],
            "eta": out.eta[row], "sample": out.sample_index[row].item(),
            "completion": text, "tokens": out.lengths[row].item(), "kl": out.kl[row].item(),
            "logp_ref": out.logp_ref[row].sum().item(),
        }, ensure_ascii=False))  # fmt: skip
    atomic_write_text(cfg.out, "\n".join(lines) + "\n")
    return len(lines)

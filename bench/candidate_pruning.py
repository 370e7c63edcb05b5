"""How many of the k candidates must be scored for the guided policy to move by at most ε, whatever the value model.

    python bench/candidate_pruning.py --out bench/results

Writes DIR/candidate_pruning.json and DIR/candidate_pruning.md. A candidate left unscored gets the floor offset
(the lowest reward's), as every non-candidate does. If the unscored candidates hold π_ref mass m, the policy with
them scored and the policy without differ by at most

    TV ≤ m (e^{Δ/η} − 1),    KL(π_full ‖ π_pruned) ≤ (Δ/η) m e^{Δ/η},

for any value model whose rewards span Δ (1 for a 0/1 reward): only their weights change, by at most e^{Δ/η}, and
the normaliser is at least 1. So the sound pruning rule is "score π_ref's most likely candidates until the rest
hold m ≤ ε / (e^{Δ/η} − 1)". This script samples π_ref (SmolLM2-135M-Instruct's real weights when installed, its
shape with random weights otherwise; the JSON says which) on decode_speed.py's prompts and counts, at every step
and η, the candidates that rule must score: the mean per row, and the mean of the batch's largest (what a padded
batched pass would run). No value model is involved: the bound holds for all of them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import tyro
from decode_speed import PROMPTS, reference_model

from qsharp_ext.generate import guided_generate
from qsharp_ext.io import atomic_write_text, markdown_table, write_json


@dataclasses.dataclass
class Config:
    """Candidates the sound pruning rule must score, on π_ref's own samples."""

    out: Path = Path("bench/results")
    """Folder for candidate_pruning.json and candidate_pruning.md."""
    etas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    epsilon: float = 0.01
    """Largest total-variation change allowed between the pruned and the full guided policy."""
    reward_span: float = 1.0
    """Δ = v_max − v_min of the value model's rewards."""
    batch: int = 16
    new_tokens: int = 128
    top_k: int = 20
    threads: int = 2


def candidates_needed(masses: torch.Tensor, budget: float) -> torch.Tensor:
    """(…,) the fewest of the k candidates (π_ref-descending masses (…, k)) to score so that the rest hold ≤ budget."""
    rest = masses.flip(-1).cumsum(-1).flip(-1)  # rest[j] = mass of candidates j … k−1
    return (rest > budget).sum(-1)  # candidates 0 … n−1 scored, the rest's mass ≤ budget


def main(argv: list[str] | None = None) -> dict:
    cfg = tyro.cli(Config, args=argv, description=__doc__)
    torch.set_num_threads(cfg.threads)
    ref, tokenizer, model_name = reference_model()
    masses = []  # per step (N, k): π_ref's candidate masses, most likely first

    def keep(step: int, tensors: dict) -> None:
        masses.append(torch.softmax(tensors["ref_logits"].double(), -1).topk(cfg.top_k).values)

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(cfg.batch)]
    guided_generate(ref, tokenizer, prompts, etas=(None,), max_new_tokens=cfg.new_tokens, top_k=cfg.top_k,
                    eos_token_id=[], seed=0, on_step=keep)  # fmt: skip
    stacked = torch.stack(masses)  # (T, N, k)
    rows = []
    for eta in cfg.etas:
        budget = cfg.epsilon / math.expm1(cfg.reward_span / eta)
        needed = candidates_needed(stacked, budget).double()  # (T, N)
        rows.append({
            "eta": eta, "mass_budget": budget, "mean_per_row": needed.mean().item(),
            "mean_batch_max": needed.max(-1).values.mean().item(),
            "all_k_share": (needed == cfg.top_k).double().mean().item(),
        })  # fmt: skip
    mass_outside = (1 - stacked.sum(-1)).mean().item()
    meta = {**dataclasses.asdict(cfg), "out": str(cfg.out), "ref_model": model_name}
    write_json(cfg.out / "candidate_pruning.json", {"rows": rows, "mass_outside_top_k": mass_outside, "meta": meta})
    text = (
        f"# Candidates to score for TV ≤ {cfg.epsilon} whatever the value model ({model_name}, batch {cfg.batch}, "
        f"{cfg.new_tokens} sampled tokens, k = {cfg.top_k}, reward span {cfg.reward_span})\n\n"
        + markdown_table(rows, ["eta", "mass_budget", "mean_per_row", "mean_batch_max", "all_k_share"])
        + f"\nπ_ref mass outside the top {cfg.top_k}, mean over steps and rows: {mass_outside:.3f}.\n"
    )
    atomic_write_text(cfg.out / "candidate_pruning.md", text)
    print(text)
    return {"rows": rows}


if __name__ == "__main__":
    main()

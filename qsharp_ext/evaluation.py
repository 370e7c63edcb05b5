"""`qsharp-ext evaluate`: π_ref, CD and Q♯ (at several η) on a task's held-out prompts, honestly measured.

Per (method, η) row: pass@1 (mean reward over all samples) with its standard error clustered by prompt,
maj@n (the reward of the most common answer per prompt, answers grouped by the task's equivalence),
pass@n (any sample correct), best-of-n picked by the value model's score of each finished answer (`bon_value`;
`verifier_score` says how the values at its tokens are folded into one) and its gain over a random sample of
the same row (`bon_gain`, paired SE `bon_gain_se`),
the value model's ROC-AUC between right and wrong samples of the same prompt (`value_auc`: does it rank a
prompt's answers, the thing guidance relies on, rather than only tell hard prompts from easy ones),
the mean exact sequence KL(π‖π_ref) and tokens/s. One trained value model serves every η of its method.
Writes `results.json` (a list of rows), `results.md`, `pareto.png` (pass@1 against KL) and `samples.jsonl`
(every sample: its prompt, completion, answer, reward and KL), from which two evaluations that drew the same
prompts with the same seed can be compared prompt by prompt (`paired_gain`, `load_prompt_rewards`).
Each finished batch is kept under `units/` until the report is written, so rerunning the same command after
a crash or Ctrl-C samples only the batches that were missing, with the same noise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from qsharp_ext.config import check_field_types
from qsharp_ext.decode_options import DecodeOptions, check_sampling_options
from qsharp_ext.errors import UserError
from qsharp_ext.eta import check_etas
from qsharp_ext.generate import GenerationOutput, guided_generate
from qsharp_ext.io import atomic_write_text, check_output_folder, markdown_table, write_json
from qsharp_ext.loading import load_reference, load_value_model, stop_token_ids
from qsharp_ext.metrics import within_group_roc_auc
from qsharp_ext.plots import accuracy_kl_plot
from qsharp_ext.prompts import prompt_token_ids
from qsharp_ext.scale import ray_pool
from qsharp_ext.scale.options import ScaleOptions, check_scale_options
from qsharp_ext.scale.vllm_sampler import VllmSampler
from qsharp_ext.tasks import build_task
from qsharp_ext.unit_store import UnitStore
from qsharp_ext.verifier import ScoreRule, answer_score, token_values

COLUMNS = [
    "method", "eta", "pass@1", "pass@1_se", "gain", "gain_se", "maj@n", "pass@n", "bon_value", "bon_gain",
    "bon_gain_se", "value_auc", "kl", "tok_s",
]  # fmt: skip


@dataclasses.dataclass(kw_only=True)
class EvaluateSettings:
    """Which rows to sample and how many: `evaluate`'s fields that a pipeline's rounds share, nested there as
    `--evaluate.FIELD` (each round fills in its folder and value models)."""

    etas: tuple[float | None, ...] = (None, 1.0, 0.3, 0.1, 0.03)
    """η values: each positive η gives a Q♯ and a CD row (one trained model each serves them all); None gives
    π_ref's own row (unguided: `None` on the command line, `null` in YAML), against which `gain` is measured.
    Leave None out to sample only the value-guided rows (e.g. ablations of one value model)."""
    num_samples: int = 8
    """Samples per prompt (n of maj@n, pass@n and best-of-n)."""
    max_prompts: int | None = None
    """Evaluate on the first N evaluation prompts only."""
    verifier_score: ScoreRule = "mean"
    """How best-of-n scores a finished answer from the value model's predicted final reward after each of its
    tokens: `mean` over its tokens, `last` (once written) or `min`. `mean` ranked best on SmolLM2 arithmetic
    (within-prompt ROC-AUC 0.71 against 0.55 for `last`; results/smollm2-arithmetic); python/best_of_n.py
    compares the rules on any evaluation."""
    prompts_per_batch: int = 8
    """Prompts decoded together (each with num_samples rows). A batch draws its noise from the seed and its
    first prompt, so runs compare prompt by prompt only with the same seed and prompts_per_batch."""

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclasses.dataclass
class EvaluateConfig(ScaleOptions, DecodeOptions, EvaluateSettings):
    """Evaluate π_ref, CD and Q♯ at several η on a task's evaluation prompts."""

    out: Path
    """Folder for results.json, results.md, pareto.png and samples.jsonl (every sample and its reward); a
    rerun into it after a crash resumes from the finished batches kept in its units/ folder."""
    ref_model: str
    """π_ref: a local folder or a Hugging Face model id."""
    qsharp_model: str | None = None
    """Saved Q♯ value model (Bernoulli or histogram head); its rows are skipped when absent."""
    cd_model: str | None = None
    """Saved value model CD steers with, by its rule π_ref·exp(E[z]/η): a mean head (the baseline's own), or any
    head's expected reward (qsharp_model's folder: one model, two rules); CD's rows are skipped when absent."""


def standard_error(per_prompt: torch.Tensor) -> float:
    """SE of the mean over prompts of per-prompt means: samples of one prompt are not independent."""
    n = per_prompt.numel()
    return (per_prompt.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else 0.0


def majority_reward(
    answers: Sequence[str | None], rewards: Sequence[float], equal: Callable[[str, str], bool]
) -> float:
    """The reward of a sample holding the most common answer (first such group on ties); 0 if none answered."""
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for group in groups:
            if equal(answers[group[0]], answer):
                group.append(i)
                break
        else:
            groups.append([i])
    if not groups:
        return 0.0
    best = max(groups, key=len)  # max keeps the first of equal-sized groups
    return rewards[best[0]]


def score_samples(task, problems, prompt_ids, out: GenerationOutput, tokenizer) -> dict[str, list]:
    """Reward, answer and whole sequence of every generated row."""
    completions, texts = out.token_lists(), out.texts(tokenizer)
    rewards, answers, sequences = [], [], []
    for row, (text, completion) in enumerate(zip(texts, completions, strict=True)):
        problem = problems[out.prompt_index[row]]
        rewards.append(task.reward(problem, text))
        answers.append(task.answer_of(text))
        sequences.append(prompt_ids[out.prompt_index[row]] + completion)
    return {"reward": rewards, "answer": answers, "sequence": sequences, "completion": texts}


def paired_gain(per_prompt: torch.Tensor, ref_per_prompt: torch.Tensor) -> tuple[float, float]:
    """pass@1 minus π_ref's on the same prompts, and its standard error from the per-prompt differences.

    Both methods see the same prompts, so the prompt-to-prompt spread of difficulty cancels: this SE is the
    one to compare a gain against (much smaller than combining the two pass@1 SEs as if independent).
    """
    diff = per_prompt - ref_per_prompt
    return diff.mean().item(), standard_error(diff)


SAMPLE_FIELDS = (
    "completion",
    "answer",
    "reward",
    "kl",
    "value",
    "token_values",
)  # per sample in samples.jsonl, when known


def sample_records(method: str, eta: float | None, samples: dict[str, list], prompt_ids: list[str]) -> list[dict]:
    """One samples.jsonl record per sample of one (method, η); samples come grouped prompt by prompt."""
    per_prompt = len(samples["reward"]) // len(prompt_ids)
    fields = [f for f in SAMPLE_FIELDS if f in samples]
    return [
        {"method": method, "eta": eta, "prompt_id": prompt_ids[i // per_prompt], "sample": i % per_prompt}
        | {f: samples[f][i] for f in fields}
        for i in range(len(samples["reward"]))
    ]


def load_prompt_rewards(folder: Path, method: str, eta: float | None) -> dict[str, float]:
    """Mean reward per prompt id of one (method, η) in an evaluation folder's samples.jsonl."""
    path = Path(folder) / "samples.jsonl"
    if not path.is_file():
        raise UserError(f"{path} is missing: evaluations written before samples.jsonl existed must be run again")
    totals: dict[str, list[float]] = {}
    with path.open() as lines:
        for line in lines:
            record = json.loads(line)
            if record["method"] == method and record["eta"] == eta:
                totals.setdefault(record["prompt_id"], []).append(record["reward"])
    if not totals:
        raise UserError(f"{path} has no samples of {method} at η {eta}")
    return {prompt: sum(r) / len(r) for prompt, r in totals.items()}


def prompt_rewards(samples: dict[str, list], n_samples: int) -> torch.Tensor:
    """The rewards of one (method, η) as (prompts, samples): rows come grouped prompt by prompt."""
    return torch.tensor(samples["reward"], dtype=torch.float64).view(-1, n_samples)


def summarize(method: str, eta: float | None, samples: dict[str, list], n_samples: int, equal, v_max) -> dict:
    """One results row from all samples of one (method, η), rows grouped prompt by prompt."""
    rewards = prompt_rewards(samples, n_samples)  # (P, n)
    answers = [samples["answer"][i : i + n_samples] for i in range(0, len(samples["answer"]), n_samples)]
    per_prompt = rewards.mean(1)
    row = {
        "method": method,
        "eta": eta,
        "pass@1": per_prompt.mean().item(),
        "pass@1_se": standard_error(per_prompt),
        "maj@n": sum(majority_reward(a, r.tolist(), equal) for a, r in zip(answers, rewards, strict=True))
        / len(answers),
        "pass@n": (rewards >= v_max).any(1).double().mean().item(),
        "bon_value": None,
        "bon_gain": None,
        "bon_gain_se": None,
        "value_auc": None,
        "kl": float(sum(samples["kl"]) / len(samples["kl"])),
        "tok_s": samples["tok_s"],
        "n_prompts": rewards.shape[0],
        "n_samples": n_samples,
    }
    values = samples.get("value")  # the verifier's score of each sample, where there is a value model
    if values is not None:
        values_t = torch.tensor(values, dtype=torch.float64).view(-1, n_samples)  # (P, n)
        best = rewards.gather(1, values_t.argmax(1, keepdim=True)).squeeze(1)  # (P,): the pick's reward
        row["bon_value"] = best.mean().item()
        row["bon_gain"], row["bon_gain_se"] = paired_gain(best, per_prompt)  # against a random sample
        prompt_of_sample = [i // n_samples for i in range(len(values))]
        row["value_auc"] = within_group_roc_auc(values, (rewards >= v_max).flatten(), prompt_of_sample)
    return row


def _methods(cfg: EvaluateConfig) -> list[tuple[str, float | None]]:
    """(method, η) per results row: π_ref first when `etas` holds None, then CD's and Q♯'s η."""
    methods: list[tuple[str, float | None]] = [("pi_ref", None)] if None in cfg.etas else []
    guided = [eta for eta in cfg.etas if eta is not None]
    methods += [("cd", eta) for eta in guided] if cfg.cd_model else []
    methods += [("qsharp", eta) for eta in guided] if cfg.qsharp_model else []
    return methods


def check_config(cfg: EvaluateConfig) -> None:
    """One clear sentence for a config that cannot work, before any model loads or any file is written."""
    check_output_folder(cfg.out)
    check_scale_options(cfg)
    check_sampling_options(cfg, cfg.max_new_tokens)
    check_etas(cfg.etas)
    for name in ("num_samples", "prompts_per_batch"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.max_prompts is not None and cfg.max_prompts < 1:
        raise UserError(f"max_prompts must be at least 1 (or None for all), got {cfg.max_prompts}")
    if not _methods(cfg):
        raise UserError("nothing to evaluate: etas hold no None (π_ref) and no value model is given")


class BatchSampler:
    """π_ref, the value models (and vLLM) loaded once; samples and scores one (method, first prompt) unit.

    The one worker of both backends: the local loop calls it in this process, each Ray actor holds one.
    A unit's noise depends on its first prompt only, so units can run anywhere and in any order.
    """

    def __init__(self, cfg: EvaluateConfig, task, problems: list) -> None:
        self.cfg, self.task, self.problems, self.methods = cfg, task, problems, _methods(cfg)
        self.ref, self.tokenizer = load_reference(cfg.ref_model, cfg.device, cfg.dtype)
        load = functools.partial(
            load_value_model, tokenizer=self.tokenizer, device=cfg.device, dtype=cfg.dtype, ref_model=self.ref
        )
        self.value_models = {"pi_ref": None, "cd": None, "qsharp": None}
        self.value_models |= {"qsharp": load(cfg.qsharp_model)} if cfg.qsharp_model else {}
        same = cfg.cd_model is not None and cfg.cd_model == cfg.qsharp_model  # CD by the rule, from Q♯'s model
        if cfg.cd_model:
            self.value_models["cd"] = self.value_models["qsharp"] if same else load(cfg.cd_model)
        self.verifier = self.value_models["qsharp"] or self.value_models["cd"]
        self.prompt_ids = prompt_token_ids(self.tokenizer, [p.prompt for p in problems])  # unknown words refused
        self.vllm = VllmSampler(cfg.ref_model, cfg.seed, cfg.vllm_gpu_memory_utilization) if cfg.vllm else None

    def __call__(self, unit: tuple[int, int]) -> dict[str, Any]:
        cfg, (method_index, first) = self.cfg, unit
        method, eta = self.methods[method_index]
        batch, start = slice(first, first + cfg.prompts_per_batch), time.perf_counter()
        if method == "pi_ref" and self.vllm is not None:
            n_rows = len(self.prompt_ids[batch]) * cfg.num_samples
            out = self.vllm.sample(
                self.prompt_ids[batch], cfg.num_samples, [(cfg.seed + first) * 1_000_003 + r for r in range(n_rows)],
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                eos_token_id=stop_token_ids(self.ref, self.tokenizer),
            )  # fmt: skip
        else:
            out = guided_generate(
                self.ref, self.tokenizer, self.prompt_ids[batch], self.value_models[method], etas=(eta,),
                num_samples=cfg.num_samples, max_new_tokens=cfg.max_new_tokens, top_k=cfg.top_k,
                temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + first,
                guidance="cd" if method == "cd" else "qsharp",
            )  # fmt: skip
        scored = score_samples(self.task, self.problems[batch], self.prompt_ids[batch], out, self.tokenizer)
        scored |= {"kl": out.kl.tolist(), "tokens": int(out.lengths.sum()), "seconds": time.perf_counter() - start}
        if self.verifier is not None:  # best-of-n: the value model's score of each finished answer
            prompt_lens = [len(self.prompt_ids[batch][i]) for i in out.prompt_index]
            scored["token_values"] = token_values(self.verifier, scored["sequence"], prompt_lens)
            scored["value"] = [answer_score(v, cfg.verifier_score) for v in scored["token_values"]]
        return scored


def run_evaluate(cfg: EvaluateConfig, task=None, progress: bool = True) -> list[dict]:
    """Sample every method on the evaluation prompts, write the report, return its rows."""
    check_config(cfg)
    task = task or build_task(cfg.task, cfg.task_options)
    problems = task.eval_problems()[: cfg.max_prompts]
    if not problems:
        raise UserError(f"task {task.name} has no evaluation prompts")
    methods, firsts = _methods(cfg), range(0, len(problems), cfg.prompts_per_batch)
    units = [(m, first) for m in range(len(methods)) for first in firsts]
    store = UnitStore(cfg.out / "units", unit_settings(cfg))
    name = {(m, first): f"{methods[m][0]}-{methods[m][1]}-{first}" for m, first in units}
    results = {unit: store.load(name[unit]) for unit in units}
    pending = [unit for unit, result in results.items() if result is None]
    if cfg.backend == "ray":
        finished = ray_pool.map_units(functools.partial(BatchSampler, cfg, task, problems), pending, cfg, cfg.device)
    else:
        sampler = BatchSampler(cfg, task, problems) if pending else None
        finished = ((unit, sampler(unit)) for unit in pending)
    done = len(units) - len(pending)
    with tqdm(total=len(units), initial=done, desc="evaluate", unit="batch", disable=not progress) as bar:
        for unit, scored in finished:  # each batch on disk as it finishes: a rerun after a crash samples the rest
            store.save(name[unit], scored)
            results[unit] = scored
            bar.update()
    equal = getattr(task, "answers_equal", lambda a, b: a == b)
    rows, per_prompt, records, prompt_ids = [], {}, [], [p.id for p in problems]
    for m, (method, eta) in enumerate(methods):
        parts = [results[(m, first)] for first in firsts]  # prompt order, whatever order they finished in
        samples = {key: [v for part in parts for v in part[key]] for key in parts[0] if isinstance(parts[0][key], list)}
        samples["tok_s"] = sum(p["tokens"] for p in parts) / sum(p["seconds"] for p in parts)
        rows.append(summarize(method, eta, samples, cfg.num_samples, equal, task.v_max))
        per_prompt[m] = prompt_rewards(samples, cfg.num_samples).mean(1)
        records += sample_records(method, eta, samples, prompt_ids)
    if methods[0][0] == "pi_ref":
        for m, row in enumerate(rows):
            row["gain"], row["gain_se"] = paired_gain(per_prompt[m], per_prompt[0]) if m else (None, None)
    write_report(cfg, rows, task.name, records)
    store.remove()
    return rows


# Fields that do not change what a batch samples: where it runs, which rows are asked for, where results go.
UNIT_NEUTRAL = ("out", "backend", "ray_address", "num_workers", "vllm_gpu_memory_utilization", "etas")


def unit_settings(cfg: EvaluateConfig) -> dict[str, Any]:
    """What a finished batch depends on: the config and the model files (a retrained model is a new one)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in UNIT_NEUTRAL}
    models = {"ref_model": cfg.ref_model, "qsharp_model": cfg.qsharp_model, "cd_model": cfg.cd_model}
    return settings | {"model_files": {k: file_stamps(v) for k, v in models.items() if v}}


def file_stamps(path: str) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of every file in a model folder; none for a hub id (its files are the hub's)."""
    folder = Path(path)
    files = sorted(f for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []
    return [(str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def write_report(cfg: EvaluateConfig, rows: list[dict], task_name: str, records: list[dict]) -> None:
    """The report files; results.json last, so that its presence means the evaluation is complete."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    n = rows[0]["n_samples"]
    header = f"# {task_name}: {rows[0]['n_prompts']} prompts × {n} samples (maj@n, pass@n, best-of-n with n = {n})\n\n"
    atomic_write_text(cfg.out / "results.md", header + markdown_table(rows, COLUMNS))
    accuracy_kl_plot(rows, cfg.out / "pareto.png", "pass@1", f"{task_name}: pass@1 against KL to π_ref")
    atomic_write_text(cfg.out / "evaluate_config.json", json.dumps(dataclasses.asdict(cfg), default=str, indent=2))
    write_json(cfg.out / "results.json", rows)


def summary_line(rows: list[dict]) -> str:
    parts = [f"π_ref pass@1 {r['pass@1']:.3f} ± {r['pass@1_se']:.3f}" for r in rows if r["method"] == "pi_ref"]
    for method in ("qsharp", "cd"):
        mine = [r for r in rows if r["method"] == method]
        if mine:
            best = max(mine, key=lambda r: r["pass@1"])
            score = f"{best['pass@1']:.3f} ± {best['pass@1_se']:.3f}"
            parts.append(f"{method} best {score} at η={best['eta']:g} (KL {best['kl']:.2f})")
    return "; ".join(parts)

"""The star-graph experiment in one command: π_ref, REINFORCE, DPO, RPO, CD and Q♯ on G(d, l).

    python python/stargraph.py --degree 5 --path-len 5 --out runs/G5-5            # the full experiment
    python python/stargraph.py --degree 2 --path-len 5 --preset quick --out runs/G2-5-quick

π_ref is a small Llama trained from scratch by next-token prediction on the answers (cached under
`--cache` and reused by every run with the same task and π_ref settings). It learns the "Clever Hans"
shortcut: it follows edges but guesses the first step, so its accuracy is about 1/d. For d > 2 the run first
runs (or reads from the cache) the quick experiment on G(2, l) and starts π_ref and the value models from its
π_ref and Q♯ value model: a curriculum (`--no-curriculum` starts from scratch). Every method starts
from that π_ref and is evaluated by sampling at T = 1 on the same test graphs. CD and Q♯ run through the
library's pipeline (collect → train → evaluate, DAgger rounds); REINFORCE, DPO and RPO are in
`stargraph_policy.py`. Each stage records its result and wall time under `<out>/stages/`, so an
interrupted run resumes at the first unfinished stage.

Output: `<out>/results.json` (accuracies `pi_ref`, `reinforce`, `dpo`, `rpo`, `cd`, `qsharp`; `kl_cd`,
`kl_qsharp`; `seconds` per stage; π_ref's shortcut diagnostics; the value models' accuracy per hop), `results.md`,
`results.png` and `hops.png`. The quick preset (the demo's) skips CD (`--cd` puts it back).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import stargraph_hops as hops
import stargraph_policy as policy
import torch
import tyro
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from qsharp_ext import (
    CollectSettings,
    EvaluateSettings,
    PipelineConfig,
    TrainSettings,
    UserError,
    ValueModel,
    run_pipeline,
)
from qsharp_ext.io import atomic_write_text, record_run_settings, write_folder
from qsharp_ext.plots import save_figure
from qsharp_ext.tasks import Problem, StarGraphTask
from qsharp_ext.tasks.stargraph import make_stargraph_reference

METHODS = ("pi_ref", "reinforce", "dpo", "rpo", "cd", "qsharp")


@dataclasses.dataclass
class StarGraphConfig:
    """One star-graph experiment; `--preset` picks the sizes, any flag overrides them."""

    degree: int = 5
    """d: arms of the star."""
    path_len: int = 5
    """l: nodes on the path from the source to the goal, both included."""
    out: Path = Path("runs/stargraph")
    """Run folder (resumable)."""
    cache: Path = Path("runs/stargraph-cache")
    """Where pretrained π_refs are kept, one folder per task and π_ref settings."""
    n_labels: int = 50
    """Node labels to draw from."""
    n_pretrain: int = 200_000
    """Graphs for π_ref's pretraining."""
    n_posttrain: int = 200_000
    """Graphs for post-training (RL, preference pairs, DAgger roll-outs)."""
    n_test: int = 2000
    """Test graphs; every method is evaluated on all of them, one sample each at T = 1."""
    ref_layers: int = 4
    """π_ref's transformer layers (the value models copy all of them)."""
    ref_hidden: int = 128
    """π_ref's width."""
    pretrain_steps: int = 1000
    """π_ref's next-token training steps (batch 128)."""
    pretrain_lr: float = 1e-3
    ref_init: Path | None = None
    """Start π_ref's pretraining from this pretrained star-graph π_ref (same labels, layers and width)
    instead of random weights: a curriculum, e.g. G(2,5)'s π_ref, which already follows edges, for G(5,5)."""
    curriculum: bool = True
    """For degree > 2: first run the curriculum_preset experiment on G(2, path_len) (same labels, π_ref size, value
    layers, future-token objective and seed; kept under --cache and reused) and start from it: π_ref from its π_ref for
    warm_pretrain_steps (unless --ref-init), the value models from its Q♯ value model for warm_value_steps of
    warm_value_batch (unless --value-init). Started from scratch on G(5,5), neither π_ref (2,000 steps) nor the
    value model (1,500 steps) learned to follow edges."""
    curriculum_preset: Literal["full", "quick", "smoke"] = "quick"
    """The preset of the G(2, path_len) run the curriculum starts from (the quick one is `make demo`'s)."""
    warm_pretrain_steps: int = 600
    """π_ref's pretraining steps when the curriculum starts it from G(2, path_len)'s π_ref."""
    warm_value_steps: int = 2000
    """Value-model training steps when the curriculum starts them from G(2, path_len)'s value model."""
    warm_value_batch: int = 64
    """Roll-outs per value-model step when the curriculum starts them from G(2, path_len)'s value model."""
    rl_steps: int = 150
    """REINFORCE steps (32 graphs × 4 samples each)."""
    rl_lr: float = 1e-4
    pref_samples: int = 4
    """π_ref samples per post-training graph when looking for a failed one (the rejected answer)."""
    pref_graphs: int = 4096
    """Post-training graphs scanned for preference pairs."""
    pref_steps: int = 200
    """DPO / RPO steps (batch 32 pairs)."""
    pref_lr: float = 1e-4
    beta: float = 0.1
    """DPO / RPO β."""
    rpo_alpha: float = 1.0
    """Weight of RPO's chosen-answer NLL."""
    rounds: int = 1
    """Q♯ DAgger rounds (one: π_ref's own roll-outs already walk down every arm; the time goes to one longer
    training instead)."""
    value_prompts: int = 16384
    """Post-training graphs rolled out per round for the value models."""
    value_samples: int = 2
    """Roll-outs per graph and round."""
    value_steps: int = 6000
    """Value-model training steps per round (on G(2,5), batch 64: 1,500 steps gave Q♯ 0.897, 3,000 gave 0.944;
    batch 32 × 6,000, the same roll-outs seen, 0.953: the value of a wrong first step keeps falling after the
    ranking is right, and Q♯'s weights follow its ratio)."""
    value_batch: int = 32
    """Roll-outs per value-model step (32 × 2,000 steps learned the first step's three hops where 64 × 1,000, the
    same compute, did not; a step of 32 takes about 0.13 s on G(2,5))."""
    value_pack: bool = True
    """With value_samples > 1: train a graph's roll-outs in the same batch (group_by_prompt) and pass the graph
    through the value model once for all of them (pack_prompts): a graph is 3·d·(l − 1) + 4 tokens, an answer
    l + 1, so a step of 64 roll-outs takes 0.52 × the time on G(5,5), 0.62 × on G(2,5) (bench/packed_training.py).
    --no-value-pack: every roll-out in its own row, batches drawn across graphs (how G2-5/ and G5-5-no-pack/ were
    trained)."""
    value_lr: float = 1e-3
    value_extra_layers: int = 2
    """Fresh layers the value models add on top of π_ref's: the first step's value is l − 2 lookups in a row,
    more than π_ref's 4 layers leave room for (with 0 the first step stayed near 0.8 on G(2,5))."""
    value_init: Path | None = None
    """Start the value models' layers from this trained star-graph value model (same labels; e.g. G(2, l)'s,
    which already follows edges) instead of π_ref's layers + value_extra_layers fresh ones: the value model's
    curriculum, as --ref-init is π_ref's. Its reward labels still come only from this task's π_ref roll-outs."""
    future_tokens: int | None = None
    """K of the value models' future-token auxiliary objective: at every node of a roll-out they also learn to
    name the roll-out's next 1 … K nodes. None: path_len − 1 (the rest of a path); 0: BCE / MSE alone."""
    future_weight: float = 1.0
    """λ: the future-token loss's weight beside the value loss."""
    future_targets: str = "task"
    """task: the future-token targets are the nodes 1 … K steps further along each node's arm, read off the
    prompt's edges, at every node of prompt and answer (StarGraphTask.future_targets); rollout: π_ref's roll-outs'
    own next tokens (the library's generic objective; π_ref's answers after a wrong first step do not follow
    edges to the end, so these do not teach the lookups the first step needs)."""
    hop_graphs: int = 1024
    """Fresh graphs (neither test nor training graphs) on which the value models' accuracy per hop is measured."""
    eta: float = 0.1
    """η of Q♯ and CD (evaluation and the round-2 roll-in)."""
    cd: bool = True
    """Also evaluate CD at the same η (--no-cd: the quick preset's choice)."""
    cd_own_model: bool = False
    """CD trains a value model of its own (mean head, MSE, same roll-outs and steps: twice the value-model training
    time). Off: CD steers with Q♯'s value model by its own rule, π_ref·exp(p/η): a 0/1 reward's mean is the
    Bernoulli head's p, so the two methods then differ in the rule alone."""
    seed: int = 0


PRESETS: dict[str, dict] = {
    "full": {},
    "quick": dict(
        n_posttrain=20_000,
        n_test=500,
        pretrain_steps=700,
        rl_steps=40,
        pref_graphs=1024,
        pref_steps=40,
        value_prompts=16384,
        value_samples=1,
        value_steps=3000,
        cd=False,
    ),
    "smoke": dict(
        n_pretrain=2000,
        n_posttrain=1000,
        n_test=64,
        ref_layers=2,
        ref_hidden=64,
        pretrain_steps=20,
        rl_steps=3,
        pref_graphs=64,
        pref_steps=3,
        value_prompts=64,
        value_samples=2,
        value_steps=10,
        value_batch=16,
        rounds=2,
        hop_graphs=64,
        curriculum_preset="smoke",
        warm_pretrain_steps=20,
        warm_value_steps=10,
        warm_value_batch=16,
    ),
}


def parse_config(argv: list[str]) -> StarGraphConfig:
    """`--preset NAME` sets the defaults; every other flag is StarGraphConfig's and overrides them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="full")
    known, rest = pre.parse_known_args(argv)
    default = StarGraphConfig(**PRESETS[known.preset])
    description = f"{__doc__}\nPresets (--preset NAME; default full): {', '.join(sorted(PRESETS))}."
    return tyro.cli(StarGraphConfig, default=default, args=rest, description=description)


# --------------------------------------------------------------------------------------------- stages


def run_stage(cfg: StarGraphConfig, name: str, compute: Callable[[], dict]) -> dict:
    """A stage's result, computed once: recorded with its wall time under <out>/stages/<name>.json."""
    path = cfg.out / "stages" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    print(f"[stage] {name}", flush=True)
    start = time.perf_counter()
    result = compute() | {"seconds": round(time.perf_counter() - start, 1)}
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"[stage] {name}: {json.dumps(result)}", flush=True)
    return result


def make_task(cfg: StarGraphConfig) -> StarGraphTask:
    return StarGraphTask(
        degree=cfg.degree, path_len=cfg.path_len, n_labels=cfg.n_labels, n_pretrain=cfg.n_pretrain,
        n_posttrain=cfg.n_posttrain, n_test=cfg.n_test, seed=cfg.seed,
    )  # fmt: skip


def reference_folder(cfg: StarGraphConfig, task: StarGraphTask) -> Path:
    """The cache folder of π_ref pretrained with these settings (task, size, steps, seed)."""
    fields = ("ref_layers", "ref_hidden", "pretrain_steps", "pretrain_lr")
    settings = {**task.settings(), **{f: getattr(cfg, f) for f in fields}}
    if cfg.ref_init is not None:  # only then, so the π_refs cached before the option keep their folders
        settings["ref_init"] = Path(cfg.ref_init).name
    return cfg.cache / f"G{cfg.degree}-{cfg.path_len}-{settings_key(settings)}"


def settings_key(settings: dict[str, Any]) -> str:
    """A cache folder's name suffix: 12 hex digits of the settings' hash."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pretrained_reference(cfg: StarGraphConfig, task: StarGraphTask, tokenizer: PreTrainedTokenizerFast) -> Path:
    """π_ref's folder: loaded from the cache, or pretrained now and saved there (atomically)."""
    folder = reference_folder(cfg, task)
    if (folder / "config.json").is_file():
        return folder
    model = make_stargraph_reference(task, n_layers=cfg.ref_layers, hidden=cfg.ref_hidden, seed=cfg.seed)
    if cfg.ref_init is not None:
        try:
            model.load_state_dict(load_policy(Path(cfg.ref_init)).state_dict())
        except (OSError, RuntimeError) as err:
            raise UserError(f"ref_init {cfg.ref_init} is not a π_ref of the same labels, layers and width") from err
    records = policy.pretrain(
        model, tokenizer, task.pretrain_problems(), steps=cfg.pretrain_steps, lr=cfg.pretrain_lr, seed=cfg.seed
    )

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / "pretrain_losses.json", json.dumps([r["loss"] for r in records]))

    return write_folder(folder, fill)


def curriculum_run(cfg: StarGraphConfig) -> StarGraphConfig:
    """The G(2, path_len) run a G(d, path_len) run starts from: its preset's sizes, this run's labels, π_ref size,
    value-model layers and objective (so that an ablation of the objective is one throughout) and seed; its
    folder under the cache is named by its settings."""
    shared = ("path_len", "n_labels", "ref_layers", "ref_hidden", "value_extra_layers", "seed", "cache")
    shared += ("future_tokens", "future_weight", "future_targets")
    first = StarGraphConfig(**PRESETS[cfg.curriculum_preset] | {f: getattr(cfg, f) for f in shared} | {"degree": 2})
    settings = {k: v for k, v in dataclasses.asdict(first).items() if k not in ("out", "cache")}
    name = f"G2-{cfg.path_len}-{cfg.curriculum_preset}-run-{settings_key(settings)}"
    return dataclasses.replace(first, out=cfg.cache / name)


def with_curriculum(cfg: StarGraphConfig) -> StarGraphConfig:
    """The settings this run trains with: under the curriculum, π_ref and the value models start from those of the
    G(2, path_len) run (run now if it is not cached)."""
    if not cfg.curriculum or cfg.degree <= 2 or (cfg.ref_init is not None and cfg.value_init is not None):
        return cfg
    first = curriculum_run(cfg)
    if not (first.out / "results.json").is_file():  # a finished first run is read as it is, not re-reported
        print(f"[curriculum] G(2, {cfg.path_len}) first, in {first.out}", flush=True)
        run(first)
    first_task = make_task(first)
    changes: dict[str, Any] = {}
    if cfg.ref_init is None:
        start = pretrained_reference(first, first_task, first_task.tokenizer())
        changes |= {"ref_init": start, "pretrain_steps": cfg.warm_pretrain_steps}
    if cfg.value_init is None:
        start = first.out / "pipeline" / f"round-{first.rounds}" / "qsharp" / "model"
        changes |= {"value_init": start, "value_steps": cfg.warm_value_steps, "value_batch": cfg.warm_value_batch}
    return dataclasses.replace(cfg, **changes)


def load_policy(folder: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def evaluate_policy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, task: StarGraphTask, problems: list[Problem], seed: int
) -> dict:
    """Accuracy (± standard error) of one T = 1 sample per test graph, plus the shortcut diagnostics."""
    completions = [c[0] for c in policy.sample_completions(model, tokenizer, task, problems, num_samples=1, seed=seed)]
    texts = [tokenizer.decode(c) for c in completions]
    correct = [task.score(p, t) for p, t in zip(problems, texts, strict=True)]
    n = len(problems)
    accuracy = sum(correct) / n
    return {
        "accuracy": accuracy,
        "se": math.sqrt(accuracy * (1 - accuracy) / n),
        "first_step_correct": sum(task.first_step_correct(p, t) for p, t in zip(problems, texts, strict=True)) / n,
        "edges_valid": sum(task.path_edges_valid(p, t) for p, t in zip(problems, texts, strict=True)) / n,
        "n": n,
    }


def finetuned(cfg: StarGraphConfig, ref: Path, train: Callable[[PreTrainedModel], list[dict]], evaluate) -> dict:
    """Fine-tune a copy of π_ref with `train`, then evaluate it; the loss curve goes in the stage record."""
    model = load_policy(ref)
    torch.manual_seed(cfg.seed)
    records = train(model)
    result = evaluate(model)
    every = max(len(records) // 20, 1)
    return result | {"curve": [{k: round(v, 4) for k, v in r.items()} for r in records[::every]]}


# The value model's held-out fit as reported; "within graphs" compares samples of one graph at one step.
VALUE_FIT = {
    "train_loss": "train loss", "eval_loss": "held-out loss", "roc_auc": "ROC-AUC",
    "within_prompt_auc": "ROC-AUC within graphs",
}  # fmt: skip


def future_tokens(cfg: StarGraphConfig) -> int:
    return cfg.path_len - 1 if cfg.future_tokens is None else cfg.future_tokens


def value_hops(cfg: StarGraphConfig, task: StarGraphTask, ref: Path) -> dict:
    """Each round's Q♯ value model (and CD's, when it has its own) on fresh graphs (`hop_graphs`): per position of
    π_ref's answer, how often the goal's arm ranks first when π_ref continues greedily after a first step down each
    arm."""
    graphs = hops.draw(task, np.random.default_rng([cfg.seed, 7]), cfg.hop_graphs)  # streams 0-2: the splits
    reference = load_policy(ref)
    result = {}
    for k in range(1, cfg.rounds + 1):
        for name in ("qsharp", "cd") if cfg.cd and cfg.cd_own_model else ("qsharp",):
            folder = cfg.out / "pipeline" / f"round-{k}" / name / "model"
            model = ValueModel.from_pretrained(folder, ref_model=reference)
            result[f"{name}_round_{k}"] = hops.accuracy_by_hops(model, task, graphs, "cpu", ref=reference)
    return result


def value_layers(cfg: StarGraphConfig, task: StarGraphTask, ref: Path) -> dict[str, Any]:
    """Where the value models' layers come from: π_ref's + fresh ones, or all of a trained value model's."""
    if cfg.value_init is None:
        return {"num_layers": cfg.ref_layers, "extra_layers": cfg.value_extra_layers}
    return {"value_model_base": str(value_base(cfg, task, ref)), "num_layers": 0, "extra_layers": 0}


def value_base(cfg: StarGraphConfig, task: StarGraphTask, ref: Path) -> Path:
    """--value-init's layers as a causal LM that the library copies a value model from: π_ref's config at the
    value model's depth, its layers, π_ref's LM head (never read) and tokenizer; written once into the run."""
    folder = cfg.out / "value-init"
    if (folder / "config.json").is_file():
        return folder
    reference, init = load_policy(ref), ValueModel.from_pretrained(Path(cfg.value_init))
    config = copy.deepcopy(reference.config)
    config.num_hidden_layers = len(init.backbone.layers)
    base = type(reference)(config)
    try:
        base.model.load_state_dict(init.backbone.state_dict())
    except RuntimeError as err:
        raise UserError(
            f"value_init {cfg.value_init} is not a star-graph value model of π_ref's labels and width"
        ) from err
    base.lm_head.load_state_dict(reference.lm_head.state_dict())

    def fill(tmp: Path) -> None:
        base.save_pretrained(tmp)
        task.tokenizer().save_pretrained(tmp)

    return write_folder(folder, fill)


def qsharp_and_cd(cfg: StarGraphConfig, task: StarGraphTask, ref: Path) -> dict:
    """Q♯ (Bernoulli head, BCE, DAgger rounds) and CD (Q♯'s model by CD's rule, or its own mean head) through the
    library's pipeline."""
    vocab = len(task.tokenizer())
    every = max(cfg.value_steps // 5, 1)
    pack = cfg.value_pack and cfg.value_samples > 1  # one roll-out per graph: nothing to pack
    train = TrainSettings(
        **value_layers(cfg, task, ref), parameterization="v", steps=cfg.value_steps, batch_size=cfg.value_batch,
        lr=cfg.value_lr, head_init="linear", future_tokens=future_tokens(cfg), future_weight=cfg.future_weight,
        future_targets=cfg.future_targets, eval_every=every, save_every=every,
        group_by_prompt=pack, pack_prompts=pack,
    )  # fmt: skip
    pipeline = PipelineConfig(
        out=cfg.out / "pipeline", task="stargraph", ref_model=str(ref), rounds=cfg.rounds, kind="bernoulli",
        collect=CollectSettings(samples_per_prompt=cfg.value_samples, max_prompts=cfg.value_prompts, eta=cfg.eta),
        train=train, evaluate=EvaluateSettings(etas=(None, cfg.eta), num_samples=1, max_prompts=cfg.n_test),
        max_new_tokens=task.max_new_tokens, top_k=vocab, temperature=1.0, train_cd=cfg.cd,
        cd_from_qsharp=cfg.cd and not cfg.cd_own_model,
        evaluate_every_round=True, seed=cfg.seed, device="cpu",
    )  # fmt: skip
    rows = run_pipeline(pipeline, task=task)
    pick = {r["method"]: r for r in rows}
    rounds = {}
    for k in range(1, cfg.rounds + 1):
        round_rows = json.loads((cfg.out / "pipeline" / f"round-{k}" / "eval" / "results.json").read_text())
        rounds[f"round_{k}"] = {r["method"]: {"accuracy": r["pass@1"], "kl": r["kl"]} for r in round_rows}
        summary = json.loads((cfg.out / "pipeline" / f"round-{k}" / "qsharp" / "summary.json").read_text())
        fit = {key: summary["metrics"].get(key) for key in VALUE_FIT}
        rounds[f"round_{k}"]["qsharp_value_model"] = fit  # held-out: graphs the value model never saw
    guided = {"pi_ref_in_pipeline": pick["pi_ref"]["pass@1"], "rounds": rounds}
    for m in guided_methods(cfg):
        guided |= {m: pick[m]["pass@1"], f"{m}_se": pick[m]["pass@1_se"], f"kl_{m}": pick[m]["kl"]}
    return guided


def guided_methods(cfg: StarGraphConfig) -> tuple[str, ...]:
    """The value-guided methods this run trains: Q♯, and CD unless --no-cd."""
    return ("cd", "qsharp") if cfg.cd else ("qsharp",)


# -------------------------------------------------------------------------------------------- report


def summarise(cfg: StarGraphConfig, stages: dict[str, dict]) -> dict:
    """results.json: one accuracy per method, the KLs, stage times and π_ref's shortcut diagnostics."""
    guided = stages["qsharp_cd"]
    result = {m: stages[m]["accuracy"] for m in METHODS if m in stages}
    result["se"] = {m: stages[m]["se"] for m in METHODS if m in stages}
    for m in guided_methods(cfg):
        result |= {m: guided[m], f"kl_{m}": guided[f"kl_{m}"]}
        result["se"][m] = guided[f"{m}_se"]
    result["pi_ref_shortcut"] = {k: stages["pi_ref"][k] for k in ("first_step_correct", "edges_valid")}
    result["pi_ref_shortcut"]["teacher_forced"] = stages["pretrain"]["teacher_forced"]
    result["chance"] = 1 / cfg.degree
    result["seconds"] = {name: s["seconds"] for name, s in stages.items()}
    result["seconds"]["total"] = round(sum(result["seconds"].values()), 1)
    result["rounds"] = guided["rounds"]
    result["value_hops"] = {k: v for k, v in stages["value_hops"].items() if k != "seconds"}
    result["future_tokens"] = future_tokens(cfg)
    result["config"] = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return result


LABELS = {"pi_ref": "π_ref", "reinforce": "REINFORCE", "dpo": "DPO", "rpo": "RPO", "cd": "CD", "qsharp": "Q♯"}


def reported(result: dict) -> list[str]:
    """The methods this run evaluated, in METHODS' order (CD is absent after --no-cd)."""
    return [m for m in METHODS if m in result]


def reads_qsharp_model(result: dict) -> bool:
    """Whether this run's CD steered with Q♯'s value model (runs before --cd-own-model trained CD its own)."""
    return "cd" in result and not result["config"].get("cd_own_model", True)


def value_fit(fit: dict) -> str:
    """Train loss, held-out loss and ROC-AUCs, any of them possibly undefined (tiny data, one outcome)."""
    shown = (f"{name} {'n/a' if fit.get(k) is None else format(fit[k], '.3f')}" for k, name in VALUE_FIT.items())
    return ", ".join(shown)


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"# Star graph G({cfg['degree']}, {cfg['path_len']})",
        "",
        f"Test accuracy, one sample per graph at T = 1 on {cfg['n_test']} test graphs (± standard error); "
        f"chance (1/d) = {result['chance']:.2f}. CD and Q♯ at η = {cfg['eta']:g}"
        + ("; CD steers with Q♯'s value model by its rule π_ref·exp(p/η)." if reads_qsharp_model(result) else "."),
        "",
        "| method | accuracy | KL(π‖π_ref) |",
        "|---|---|---|",
    ]
    for m in reported(result):
        kl = result.get(f"kl_{m}")
        kl_text = f"{kl:.3f}" if kl is not None else ""
        lines.append(f"| {LABELS[m]} | {result[m]:.3f} ± {result['se'][m]:.3f} | {kl_text} |")
    shortcut, rounds = result["pi_ref_shortcut"], result["rounds"].items()
    forced = shortcut["teacher_forced"]  # per answer token: source, first step, later nodes, EOS
    lines += [
        "",
        f"π_ref's shortcut: given the true path so far, it predicts the first step with accuracy {forced[1]:.3f} "
        f"and every later node with at least {min(forced[2:]):.3f} (greedy, teacher-forced). In its own T = 1 "
        f"samples the first step is right {shortcut['first_step_correct']:.3f} of the time and every step is an "
        f"edge of the graph {shortcut['edges_valid']:.3f} of the time.",
        "",
        "Q♯ value model per round (BCE; held out = graphs it was not trained on): "
        + "; ".join(f"{k.replace('_', ' ')}: {value_fit(r['qsharp_value_model'])}" for k, r in rounds),
        "",
        *hops_table(result),
        "Wall time per stage (s): " + ", ".join(f"{k} {v:g}" for k, v in result["seconds"].items()),
        "",
    ]
    return "\n".join(lines)


def hops_rows(result: dict) -> list[tuple[str, dict[str, float]]]:
    """(label, accuracy per hop) for each round's Q♯ and CD value model."""
    rows = []
    for key, accuracy in result["value_hops"].items():
        name, k = key.split("_round_")
        rows.append((f"{LABELS[name]} round {k}", accuracy))
    return rows


def hops_table(result: dict) -> list[str]:
    rows = hops_rows(result)
    hop_keys = list(rows[0][1])  # l − 2 hops (the first step) … 0 hops (the goal)
    cfg = result["config"]
    return [
        f"Value models: after a first step down each arm and π_ref's greedy continuation, how often the goal's "
        f"arm has the highest value at the node h hops before the goal's place, on {cfg['hop_graphs']} fresh "
        f"graphs (chance {result['chance']:.2f}; {hop_keys[0]} hops: the first step, the one guidance must fix). "
        f"Future-token objective: K = {result['future_tokens']}, λ = {cfg['future_weight']:g}, targets "
        f"{cfg.get('future_targets', 'rollout')}.",
        "",
        "| value model | " + " | ".join(hops.hops_label(h) for h in hop_keys) + " |",
        "|---|" + "---|" * len(hop_keys),
        *(f"| {label} | " + " | ".join(f"{acc[h]:.3f}" for h in hop_keys) + " |" for label, acc in rows),
        "",
    ]


def bar_chart(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    methods = reported(result)
    values = [result[m] for m in methods]
    errors = [result["se"][m] for m in methods]
    colors = [{"pi_ref": "tab:green", "cd": "tab:orange", "qsharp": "tab:blue"}.get(m, "tab:gray") for m in methods]
    ax.bar([LABELS[m] for m in methods], values, yerr=errors, capsize=3, color=colors)
    ax.axhline(result["chance"], ls="--", color="black", lw=1, label="1/d")
    for x, v in enumerate(values):
        ax.annotate(f"{v:.2f}", (x, v), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    cfg = result["config"]
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Star graph G({cfg['degree']}, {cfg['path_len']})")
    ax.legend(loc="upper left")
    save_figure(fig, path)


def hops_chart(result: dict, path: Path) -> None:
    """Accuracy per hop back from the goal, one line per value model and round."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, accuracy in hops_rows(result):
        hop_keys = list(accuracy)
        ax.plot([int(h) for h in hop_keys], [accuracy[h] for h in hop_keys], marker="o", label=label)
    ax.axhline(result["chance"], ls="--", color="black", lw=1, label="chance")
    ax.set_xticks([int(h) for h in hops_rows(result)[0][1]])
    ax.invert_xaxis()
    ax.set_xlabel("hops before the goal (left: the first step)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    cfg = result["config"]
    ax.set_title(f"Star graph G({cfg['degree']}, {cfg['path_len']}): value models per hop")
    ax.legend(fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- main


def run(cfg: StarGraphConfig) -> dict:
    record_run_settings(cfg.out / "config.json", dataclasses.asdict(cfg), ignore=("out", "cache"))
    cfg = with_curriculum(cfg)
    torch.manual_seed(cfg.seed)
    task = make_task(cfg)
    tokenizer = task.tokenizer()
    test, post = task.eval_problems(), task.train_problems()
    stages: dict[str, dict] = {}

    def evaluate(model: PreTrainedModel) -> dict:
        return evaluate_policy(model, tokenizer, task, test, seed=cfg.seed)

    def pretrain() -> dict:
        folder = pretrained_reference(cfg, task, tokenizer)
        model = load_policy(folder)
        return {"folder": str(folder), "teacher_forced": policy.teacher_forced_accuracy(model, tokenizer, test[:500])}

    stages["pretrain"] = run_stage(cfg, "pretrain", pretrain)
    ref = pretrained_reference(cfg, task, tokenizer)  # the cache, or pretrained again if it was deleted
    stages["pi_ref"] = run_stage(cfg, "pi_ref", lambda: evaluate(load_policy(ref)))

    def reinforce(model: PreTrainedModel) -> list[dict]:
        return policy.reinforce(model, tokenizer, task, post, steps=cfg.rl_steps, lr=cfg.rl_lr, seed=cfg.seed)

    stages["reinforce"] = run_stage(cfg, "reinforce", lambda: finetuned(cfg, ref, reinforce, evaluate))

    @functools.cache
    def pairs() -> list[policy.PreferencePair]:
        model, prompts = load_policy(ref), post[: cfg.pref_graphs]
        return policy.preference_pairs(model, tokenizer, task, prompts, samples=cfg.pref_samples, seed=cfg.seed)

    for name, alpha in (("dpo", 0.0), ("rpo", cfg.rpo_alpha)):

        def preference(model: PreTrainedModel, alpha: float = alpha) -> list[dict]:
            return policy.preference_training(
                model, tokenizer, pairs(), steps=cfg.pref_steps, lr=cfg.pref_lr, beta=cfg.beta, rpo_alpha=alpha,
                seed=cfg.seed,
            )  # fmt: skip

        def stage(train: Callable = preference) -> dict:
            return finetuned(cfg, ref, train, evaluate) | {"pairs": len(pairs())}

        stages[name] = run_stage(cfg, name, stage)
    stages["qsharp_cd"] = run_stage(cfg, "qsharp_cd", lambda: qsharp_and_cd(cfg, task, ref))
    stages["value_hops"] = run_stage(cfg, "value_hops", lambda: value_hops(cfg, task, ref))

    result = summarise(cfg, stages)
    atomic_write_text(cfg.out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(cfg.out / "results.md", markdown(result))
    bar_chart(result, cfg.out / "results.png")
    hops_chart(result, cfg.out / "hops.png")
    print(markdown(result))
    return result


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(sys.argv[1:] if argv is None else argv)
    try:
        run(cfg)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

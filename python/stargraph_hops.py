"""How many labelled graphs a star-graph value model needs to learn each hop back from the goal.

    python python/stargraph_hops.py --ref runs/stargraph-cache/G2-5-020cba13d5f3 --out runs/hops-ref
    python python/stargraph_hops.py --ref runs/stargraph-cache/G2-5-020cba13d5f3 --head-init fresh --out runs/hops-small
    python python/stargraph_hops.py --layers 4 --out runs/hops-scratch            # from random weights

Q♯'s value model must tell, after the first step, whether that node lies on the goal's arm: a chain of
l − 2 lookups back from the goal through the shuffled edge list. This probe isolates that half of the
star-graph experiment from data collection and guidance. Every step draws fresh graphs G(d, l), picks an
arm at random and labels the walk down that arm (the source, then every node of the arm) with the reward
a π_ref that follows edges after its first step would get: 1 iff the arm ends at the goal. A V-type
Bernoulli value model (the library's `ValueModel`, BCE, prefix extension: every node of the walk carries the
label) trains on them. On fixed held-out graphs it scores the walk down every arm; the accuracy at "h hops"
is how often the node h hops before the goal ranks the goal's arm first (0 hops: the goal itself; l − 2
hops: the first step, the one guidance needs; chance is 1/d).

Output: OUT/hops.json (settings and the curve), hops.md (the table) and hops.png.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm import tqdm
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel

from qsharp_ext.errors import UserError
from qsharp_ext.future_tokens import FutureTokenHeads, future_targets, future_token_loss
from qsharp_ext.io import atomic_write_text, markdown_table, write_json
from qsharp_ext.plots import save_figure
from qsharp_ext.tasks import StarGraphTask
from qsharp_ext.tasks.stargraph import StarGraph, make_stargraph_reference, random_star_graphs
from qsharp_ext.value_model import ValueModel


@dataclasses.dataclass
class HopsConfig:
    """One value model trained on exactly labelled walks; its accuracy per hop is logged as it learns."""

    out: Path = Path("runs/stargraph-hops")
    """Folder for hops.json, hops.md and hops.png."""
    degree: int = 2
    """d: arms of the star."""
    path_len: int = 5
    """l: nodes from the source to the goal, both included (the first step is l − 2 hops from the goal)."""
    n_labels: int = 50
    """Node labels to draw from (must match π_ref's vocabulary with --ref)."""
    ref: Path | None = None
    """A pretrained star-graph π_ref (a folder of `stargraph.py`'s cache): the value model starts from all of
    its layers. Without it, from random weights with `layers` layers."""
    layers: int = 4
    """Layers of the value model from random weights (ignored with --ref)."""
    extra_layers: int = 0
    """Fresh layers added after the starting layers (π_ref's or the random ones)."""
    hidden: int = 128
    """Width of the value model from random weights (ignored with --ref)."""
    head_init: str = "linear"
    """The value head's start: linear (torch.nn.Linear's scale) or fresh (the library's small default)."""
    steps: int = 3000
    """Training steps, each on `batch` new graphs."""
    batch: int = 64
    lr: float = 3e-4
    """AdamW learning rate (no weight decay, no schedule)."""
    future_tokens: int = 0
    """K of the future-token auxiliary objective: at every node of the walk, heads also predict the walk's
    next 1 … K nodes (0: BCE alone)."""
    future_weight: float = 1.0
    """λ: the auxiliary loss's weight beside BCE."""
    every: int = 250
    """Evaluate every this many steps."""
    n_held_out: int = 1024
    """Held-out graphs scored at each evaluation (every arm of each)."""
    threads: int = 1
    """torch CPU threads."""
    device: str = "cpu"
    """cpu or cuda."""
    seed: int = 0


@dataclasses.dataclass
class Walks:
    """Token ids of walks down arms (B, T), their 0/1 labels (B,), and where the walk's nodes start."""

    ids: torch.Tensor
    labels: torch.Tensor
    first_node: int


def arms(graph: StarGraph) -> list[list[int]]:
    """Each arm's nodes from the source's child to the arm's end, in the order the source's edges are listed."""
    child = dict(graph.edges)
    out = []
    for a, b in graph.edges:
        if a == graph.source:
            out.append([b])
            while out[-1][-1] in child:
                out[-1].append(child[out[-1][-1]])
    return out


def walks(task: StarGraphTask, graphs: list[StarGraph], choice: list[int]) -> Walks:
    """Prompt, source and arm `choice[i]` of graph i, labelled 1 iff that arm ends at the goal."""
    tokenizer = task.tokenizer()
    rows, labels = [], []
    for graph, j in zip(graphs, choice, strict=True):
        arm = arms(graph)[j]
        rows.append(tokenizer(graph.prompt())["input_ids"] + [graph.source, *arm])
        labels.append(float(arm[-1] == graph.goal))
    return Walks(torch.tensor(rows), torch.tensor(labels), first_node=task.prompt_len + 1)


def draw(task: StarGraphTask, rng: np.random.Generator, n: int) -> list[StarGraph]:
    edges, path = random_star_graphs(rng, n, task.degree, task.path_len, task.n_labels)
    return [StarGraph(tuple(map(tuple, e)), p[0], p[-1]) for e, p in zip(edges.tolist(), path.tolist(), strict=True)]


def goal_arm(graph: StarGraph) -> int:
    return next(j for j, arm in enumerate(arms(graph)) if arm[-1] == graph.goal)


@torch.no_grad()
def continued_by(ref: PreTrainedModel, w: Walks) -> Walks:
    """The walks with every node after the first step replaced by `ref`'s greedy continuation.

    Why: a star-graph π_ref that took a wrong first step need not walk on down that arm (one trained on true
    paths tends to end its answer at the goal whatever came before), so the prefixes guidance meets are
    π_ref's continuations, not walks down arms.
    """
    keep = w.first_node + 1  # prompt, source and the first step
    n = w.ids.shape[1] - keep
    prefix = w.ids[:, :keep].to(ref.device)
    out = ref.generate(prefix, attention_mask=torch.ones_like(prefix), do_sample=False, max_new_tokens=n,
                       min_new_tokens=n, pad_token_id=ref.config.pad_token_id)  # fmt: skip
    return Walks(out.cpu(), w.labels, w.first_node)


@torch.no_grad()
def accuracy_by_hops(
    model: ValueModel, task: StarGraphTask, graphs: list[StarGraph], device: str, ref: PreTrainedModel | None = None
) -> dict[str, float]:
    """Per hop distance from the goal: how often the walk down the goal's arm gets the highest value there.

    With `ref`, each walk after its first step is `ref`'s greedy continuation instead (`continued_by`).
    """
    values = []
    for j in range(task.degree):
        w = walks(task, graphs, [j] * len(graphs))
        if ref is not None:
            w = continued_by(ref, w)
        values.append(model(w.ids.to(device))[0][:, w.first_node :].float().cpu())  # (n, l - 1): nodes of the arm
    values = torch.stack(values, 1)  # (n, d, l - 1)
    truth = torch.tensor([goal_arm(g) for g in graphs])
    steps = values.shape[-1]
    return {str(steps - 1 - k): (values[:, :, k].argmax(1) == truth).float().mean().item() for k in range(steps)}


def build_model(cfg: HopsConfig, task: StarGraphTask) -> ValueModel:
    if cfg.ref is not None:
        ref = AutoModelForCausalLM.from_pretrained(cfg.ref)
    else:
        ref = make_stargraph_reference(task, n_layers=cfg.layers, hidden=cfg.hidden, seed=cfg.seed)
    layers = ref.config.num_hidden_layers
    model = ValueModel.from_reference(ref, layers, task.tokenizer(), cfg.head_init, kind="bernoulli")
    if cfg.extra_layers:
        model.backbone = deepened(model.backbone, cfg.extra_layers)
    return model


def deepened(backbone: PreTrainedModel, extra: int) -> PreTrainedModel:
    """`backbone` with `extra` freshly initialised layers after its own (its final norm kept): room for more
    lookups in a row than π_ref's depth allows."""
    config = backbone.config.__class__.from_dict(backbone.config.to_dict())
    config.num_hidden_layers += extra
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types + config.layer_types[-1:] * extra
    torch.manual_seed(0)
    deeper = AutoModel.from_config(config)
    missing, unexpected = deeper.load_state_dict(backbone.state_dict(), strict=False)
    assert not unexpected and all("layers." in k for k in missing), (missing, unexpected)
    return deeper


def run(cfg: HopsConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = StarGraphTask(cfg.degree, cfg.path_len, cfg.n_labels, n_pretrain=0, n_posttrain=0, n_test=0)
    model = build_model(cfg, task).to(cfg.device).train()
    heads = FutureTokenHeads(model.backbone.get_input_embeddings().weight.detach(), cfg.future_tokens).to(cfg.device)
    params = [*model.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 1])  # training walks; the held-out graphs come from their own stream
    held_out = draw(task, np.random.default_rng([cfg.seed, 2]), cfg.n_held_out)
    curve, losses, start = [], [], time.perf_counter()
    for step in tqdm(range(1, cfg.steps + 1), desc="value model", unit="step"):
        w = walks(task, draw(task, rng, cfg.batch), rng.integers(task.degree, size=cfg.batch).tolist())
        ids = w.ids.to(cfg.device)
        hidden = model.backbone(input_ids=ids).last_hidden_state[:, w.first_node :]  # (B, nodes, H)
        head_out = model.head_outputs(hidden)
        loss = model.loss(head_out, w.labels.to(cfg.device)[:, None].expand_as(head_out))
        if heads.k and cfg.future_weight:
            nodes = torch.arange(w.first_node, ids.shape[1])
            rows, cols = torch.meshgrid(torch.arange(ids.shape[0]), nodes, indexing="ij")  # (B, nodes) each
            targets = future_targets(ids, torch.ones_like(ids), rows.flatten(), cols.flatten(), heads.k)
            loss = loss + cfg.future_weight * future_token_loss(heads(hidden.flatten(0, 1)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % cfg.every == 0 or step == cfg.steps:
            model.eval()
            hops = accuracy_by_hops(model, task, held_out, cfg.device)
            model.train()
            curve.append({
                "step": step, "graphs": step * cfg.batch, "loss": float(np.mean(losses[-cfg.every :])),
                "accuracy_by_hops": hops, "seconds": round(time.perf_counter() - start, 1),
            })  # fmt: skip
            tqdm.write(json.dumps(curve[-1]))
    result = {"config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), "chance": 1 / cfg.degree}
    return result | {"curve": curve}


def hops_label(h: str) -> str:
    return f"{h} hop" if h == "1" else f"{h} hops"


def report(result: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    write_json(out / "hops.json", result)
    hops = list(result["curve"][0]["accuracy_by_hops"])
    rows = [
        {"step": r["step"], "graphs": r["graphs"], "loss": round(r["loss"], 4)}
        | {hops_label(h): round(r["accuracy_by_hops"][h], 3) for h in hops}
        for r in result["curve"]
    ]
    cfg = result["config"]
    start = f"π_ref {Path(cfg['ref']).name}" if cfg["ref"] else f"random weights, {cfg['layers']} layers"
    extra = f" + {cfg['extra_layers']} fresh layers" if cfg.get("extra_layers") else ""
    future = f", future tokens K = {cfg['future_tokens']}" if cfg.get("future_tokens") else ""
    title = (f"G({cfg['degree']}, {cfg['path_len']}): value model from {start}{extra}, {cfg['head_init']} head, "
             f"lr {cfg['lr']:g}, batch {cfg['batch']}{future}")  # fmt: skip
    atomic_write_text(out / "hops.md", f"# {title}\n\nHeld-out accuracy per hop from the goal (chance "
                      f"{result['chance']:.2f}).\n\n{markdown_table(rows, list(rows[0]))}")  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for h in hops:
        ax.plot([r["graphs"] for r in result["curve"]], [r["accuracy_by_hops"][h] for r in result["curve"]],
                marker="o", ms=3, label=hops_label(h))  # fmt: skip
    ax.axhline(result["chance"], ls="--", color="black", lw=1, label="chance")
    ax.set_xlabel("labelled walks seen")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, out / "hops.png")


def main() -> None:
    cfg = tyro.cli(HopsConfig, description=__doc__)
    if min(cfg.steps, cfg.batch, cfg.every, cfg.n_held_out) < 1:
        sys.exit("error: steps, batch, every and n_held_out must be at least 1")
    try:
        report(run(cfg), cfg.out)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

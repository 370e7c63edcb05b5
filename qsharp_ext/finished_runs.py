"""A finished training run read back from its folder: its config, its saved value model, its held-out prompts.

Why it exists: experiment programs (python/value_model_study.py) study a trained value model on the prompts
its run held out, or recompute held-out metrics for runs whose summary predates one; the training loop never
reads a finished run back, so this lives outside it. Nothing is trained or written here.

It knows the run folder's layout (training.py) and reloads π_ref (or only its tokenizer) as training did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qsharp_ext.config import from_recorded
from qsharp_ext.errors import UserError
from qsharp_ext.loading import load_tokenizer, resolve_device
from qsharp_ext.rollout_data import Rollout
from qsharp_ext.training import TrainConfig, evaluate, layer_source, prepare_data
from qsharp_ext.value_model import ValueModel, reads_reference


def finished_run(out: Path) -> tuple[TrainConfig, ValueModel, list[Rollout]]:
    """A finished run's config (from its summary.json), its saved value model and its held-out trajectories."""
    summary, model_folder = Path(out) / "summary.json", Path(out) / "model"
    if not (summary.is_file() and model_folder.is_dir()):
        raise UserError(f"{out} holds no finished training run (summary.json and model/)")
    cfg = from_recorded(TrainConfig, json.loads(summary.read_text())["config"], out=Path(out))
    _, eval_set = prepare_data(cfg)
    ref_model, tokenizer = layer_source(cfg) if reads_reference(model_folder) else (None, load_tokenizer(cfg.ref_model))
    model = ValueModel.from_pretrained(model_folder, tokenizer=tokenizer, ref_model=ref_model)
    return cfg, model.to(resolve_device(cfg.device)), eval_set


def score_held_out(out: Path) -> dict[str, Any]:
    """The held-out metrics of a finished run's saved model, recomputed on its held-out prompts.

    For runs whose summary predates a metric (such as `within_prompt_auc`): nothing is trained or written.
    """
    cfg, model, eval_set = finished_run(out)
    return evaluate(model, eval_set, cfg, next(model.parameters()).device)

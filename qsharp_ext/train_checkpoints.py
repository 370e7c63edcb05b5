"""Checkpoints of a training run: what its folder keeps so that it resumes exactly, or is not redone at all.

Why it exists: a resumed run must end with the weights of an uninterrupted one, must never continue under a
config or data it was not trained with, and must never find a half-written folder. That contract does not
depend on how a step is computed, so it lives apart from the loop.

- checkpoints/step-N/: a loadable value model plus trainer_state.pt (optimizer, scheduler, RNG, step, the
  recorded config, a digest of the data), written to a temporary folder and renamed; the last two are kept.
- Resuming: the recorded config must match (RESUMABLE_FIELDS aside; paths compared relative to the run
  folder, so that a moved folder resumes), and so must the data.
- metrics.jsonl is appended one record per step and read back up to the checkpoint's step; summary.json with
  the same config marks a finished run.

It knows the config only as the fields it records (config_dict) and the value model only through
save_pretrained; it knows nothing of how the steps it saves were computed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedTokenizerBase

from qsharp_ext.errors import UserError
from qsharp_ext.value_model import ValueModel

if TYPE_CHECKING:  # annotations only: training.py imports this module
    from qsharp_ext.training import TrainConfig

STATE_FILE = "trainer_state.pt"
# Fields that may change when a run is resumed: they do not change what the steps already taken computed.
RESUMABLE_FIELDS = ("out", "steps", "eval_every", "save_every", "device")
# Fields that name files: unchanged when they lie in the same place relative to `out` (a moved run folder).
PATH_FIELDS = ("data", "ref_model", "init_value_model", "value_model_base")


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as JSON values (paths as strings, tuples as lists)."""
    as_json = {"out": str(cfg.out), "data": [str(p) for p in cfg.data]}
    return {**dataclasses.asdict(cfg), **as_json}


# ----------------------------------------------------------------------------------------- checkpoints


def checkpoint_steps(out: Path) -> list[int]:
    """Steps of the finished checkpoints in `out`/checkpoints, oldest first."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    names = (p.name for p in folder.iterdir() if (p / STATE_FILE).is_file())
    return sorted(int(n.removeprefix("step-")) for n in names if n.startswith("step-") and n[5:].isdigit())


def checkpoint_path(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step}"


def replace_folder(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final` by renames, so `final` is never half-written."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save_model(model: ValueModel, tokenizer: PreTrainedTokenizerBase, final: Path, state: dict | None = None) -> None:
    """A value model folder (plus trainer_state.pt when `state` is given), written aside and renamed."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=tokenizer)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    replace_folder(tmp, final)


def trainer_state(step: int, optimizer, scheduler, cfg: TrainConfig, digest: str, heads=None) -> dict[str, Any]:
    """What a resumed run needs beyond the saved value model; the future-token heads live only here."""
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "step": step,
        "future_heads": heads.state_dict() if heads is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": cuda_rng,
        "config": json.dumps(config_dict(cfg)),
        "data_digest": digest,
    }


def save_checkpoint(
    model, tokenizer, step: int, optimizer, scheduler, cfg: TrainConfig, digest: str, heads=None
) -> None:
    """checkpoints/step-N (atomic), then drop all but the last two."""
    state = trainer_state(step, optimizer, scheduler, cfg, digest, heads)
    save_model(model, tokenizer, checkpoint_path(cfg.out, step), state)
    for old in checkpoint_steps(cfg.out)[:-2]:
        shutil.rmtree(checkpoint_path(cfg.out, old))


def same_setting(name: str, saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether the recorded config `saved` holds the same `name` as `current` (both config_dict's): equal, or a
    path (PATH_FIELDS) in the same place relative to each one's `out`, so that a run folder moved or copied with
    the data and models in it (the pipeline's) resumes."""
    if saved.get(name) == current[name]:
        return True
    if name not in PATH_FIELDS or "out" not in saved:
        return False
    return _same_place(saved[name], saved["out"], current[name], current["out"])


def _same_place(saved: Any, saved_out: str, current: Any, current_out: str) -> bool:
    if isinstance(saved, list) and isinstance(current, list):
        pairs = zip(saved, current, strict=False)
        return len(saved) == len(current) and all(_same_place(s, saved_out, c, current_out) for s, c in pairs)
    if not (isinstance(saved, str) and isinstance(current, str) and os.path.exists(current)):
        return False  # a hub id, or None, is the same only when equal
    return os.path.relpath(saved, saved_out) == os.path.relpath(current, current_out)


def check_resumable(state: dict[str, Any], cfg: TrainConfig, digest: str, where: Path) -> None:
    """Refuse to continue a checkpoint under a config or data it was not trained with."""
    saved, current = json.loads(state["config"]), config_dict(cfg)
    changed = [k for k in current if k not in RESUMABLE_FIELDS and not same_setting(k, saved, current)]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} → {config_dict(cfg)[k]!r}" for k in changed)
        raise UserError(f"{where} was trained with another config ({diffs}); use a new --out folder")
    if state["data_digest"] != digest:
        raise UserError(f"the roll-out data changed since {where} was written; use a new --out folder")
    if state["step"] > cfg.steps:
        raise UserError(f"{where} is already past steps={cfg.steps}; raise --steps or use a new --out folder")


def restore(optimizer, scheduler, state: dict[str, Any], heads=None) -> int:
    """Future-token heads, optimizer, scheduler and RNG as they were at the checkpoint; returns its step."""
    if heads is not None:
        heads.load_state_dict(state["future_heads"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"]


# ---------------------------------------------------------------------- metrics.jsonl and summary.json


def load_records(path: Path, upto: int) -> list[dict[str, Any]]:
    """The metrics.jsonl records up to step `upto` (later ones belong to steps that will be redone)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if record.get("step", upto + 1) <= upto:
            records.append(record)
    return records


def log_record(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append one line to metrics.jsonl (a line cut short by a crash is skipped when resuming)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def finished_summary(cfg: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished run in cfg.out with the same config (out and device aside), else None."""
    path = cfg.out / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    current = config_dict(cfg)
    if not all(same_setting(k, summary["config"], current) for k in current if k not in ("out", "device")):
        return None
    summary["metrics"]["model"] = str(cfg.out / "model")  # where it is now, should the folder have moved
    return summary

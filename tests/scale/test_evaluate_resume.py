"""An evaluation stopped part way (crash, Ctrl-C) resumes from its finished batches and ends as an unbroken one."""

import dataclasses
import os
import shutil

import pytest

from qsharp_ext.evaluation import BatchSampler, run_evaluate
from tests.scale.conftest import evaluate_config


class Sampled:
    """The units BatchSampler samples, in order; a KeyboardInterrupt (Ctrl-C) instead of unit number `stop_at`."""

    def __init__(self) -> None:
        self.units: list[tuple[int, int]] = []
        self.stop_at: int | None = None

    def restart(self, stop_at: int | None = None) -> None:
        self.units, self.stop_at = [], stop_at


@pytest.fixture
def sampled(monkeypatch) -> Sampled:
    record, original = Sampled(), BatchSampler.__call__

    def counting(self, unit):
        record.units.append(unit)
        if len(record.units) == record.stop_at:
            raise KeyboardInterrupt
        return original(self, unit)

    monkeypatch.setattr(BatchSampler, "__call__", counting)
    return record


def without_speed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "tok_s"} for row in rows]


def test_a_rerun_samples_only_the_missing_batches_and_matches_an_unbroken_run(
    small_task, model_dirs, sampled, tmp_path
):
    whole = evaluate_config(tmp_path / "whole", model_dirs)
    expected = run_evaluate(whole, small_task, progress=False)
    assert len(sampled.units) == 4  # (π_ref, Q♯) × 2 batches of 2 prompts
    assert not (whole.out / "units").exists()  # removed once the report is written

    cfg = evaluate_config(tmp_path / "resumed", model_dirs)
    sampled.restart(stop_at=4)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(cfg, small_task, progress=False)
    assert not (cfg.out / "results.json").exists()
    assert len([p for p in (cfg.out / "units").glob("*.json") if p.name != "settings.json"]) == 3

    sampled.restart()
    rows = run_evaluate(cfg, small_task, progress=False)
    assert sampled.units == [(1, 2)]  # only the batch that was cut off
    assert without_speed(rows) == without_speed(expected)
    assert (cfg.out / "samples.jsonl").read_text() == (whole.out / "samples.jsonl").read_text()
    assert not (cfg.out / "units").exists()


@pytest.mark.parametrize("change", ["seed", "retrained value model"])
def test_batches_from_other_settings_or_models_are_sampled_again(
    change, small_task, model_dirs, sampled, tmp_path, capsys
):
    value_dir = shutil.copytree(model_dirs[1], tmp_path / "value")  # the shared fixture's files stay untouched
    cfg = evaluate_config(tmp_path / "run", model_dirs, qsharp_model=str(value_dir))
    sampled.restart(stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(cfg, small_task, progress=False)
    if change == "seed":
        cfg = dataclasses.replace(cfg, seed=5)
    else:  # the same folder, a new file: what a retrained model looks like
        weights = next(p for p in value_dir.iterdir() if p.suffix == ".safetensors")
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    sampled.restart()
    rows = run_evaluate(cfg, small_task, progress=False)
    assert len(sampled.units) == 4
    assert "computed with other settings" in capsys.readouterr().out
    fresh = run_evaluate(dataclasses.replace(cfg, out=tmp_path / "fresh"), small_task, progress=False)
    assert without_speed(rows) == without_speed(fresh)

"""A run folder can be moved (or copied) and resumed: the roll-out manifests name the run's own models relative to
the data folder, and training compares its paths relative to its folder; manifests written with absolute paths
still load."""

import json
import shutil
from pathlib import Path

import pytest

from qsharp_ext.config import parse_config
from qsharp_ext.errors import UserError
from qsharp_ext.pipeline import PipelineConfig, run_pipeline
from qsharp_ext.rollout_data import check_settings, folder_relative, read_manifest, record_settings

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
TINY_RUN = [
    "--config", str(SMOKE), "--rounds", "2", "--collect.samples-per-prompt", "2", "--collect.max-prompts", "8",
    "--train.steps", "4", "--train.batch-size", "4", "--train.eval-every", "2", "--train.save-every", "2",
    "--no-train-cd", "--evaluate.etas", "None", "0.3", "--evaluate.num-samples", "2", "--evaluate.max-prompts", "4",
]  # fmt: skip


def pipeline(out):
    return run_pipeline(parse_config(PipelineConfig, [*TINY_RUN, "--out", str(out)], "pipeline", "test"))


def test_a_moved_pipeline_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as users give it
    pipeline("run")
    manifest = read_manifest(tmp_path / "run" / "round-2" / "data")["settings"]
    assert manifest["ref_model"] == "../../ref_model" and manifest["value_model"] == "../../round-1/qsharp/model"
    # as if interrupted in round 2's training after its last checkpoint, then moved elsewhere
    for done in ("round-2/qsharp/summary.json", "round-2/eval/results.json", "results.json"):
        (tmp_path / "run" / done).unlink()
    shutil.rmtree(tmp_path / "run" / "round-2" / "qsharp" / "model")
    first_round = (tmp_path / "run" / "round-1" / "qsharp" / "summary.json").read_text()
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "run", moved)

    rows = pipeline(moved.resolve())  # now given as an absolute path: the same run
    assert {r["method"] for r in rows} == {"pi_ref", "qsharp"} and (moved / "results.json").is_file()
    assert (moved / "round-1" / "qsharp" / "summary.json").read_text() == first_round  # finished: not redone
    summary = json.loads((moved / "round-2" / "qsharp" / "summary.json").read_text())
    assert summary["metrics"]["step"] == 4 and (moved / "round-2" / "qsharp" / "model").is_dir()


def test_a_manifest_with_absolute_paths_still_loads(tmp_path):
    data, ref, other = tmp_path / "run" / "round-1" / "data", tmp_path / "run" / "ref_model", tmp_path / "other"
    for folder in (data, ref, other):
        folder.mkdir(parents=True)
    record_settings(data, {"ref_model": str(ref.resolve()), "seed": 0})  # as written before paths were relative
    manifest = read_manifest(data)
    manifest["shards"]["shard-00000.parquet"] = 1
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert folder_relative(ref, data) == "../../ref_model"
    check_settings(data, {"ref_model": "../../ref_model", "seed": 0})  # the same folder, named as now
    check_settings(data, {"ref_model": str(ref.resolve()), "seed": 0})
    with pytest.raises(UserError, match=r"other settings \(ref_model: '\S*/run/ref_model' then, '\S*/other' now\)"):
        check_settings(data, {"ref_model": folder_relative(other, data), "seed": 0})
    record_settings(data, {"ref_model": "../../ref_model", "seed": 0})  # rewritten in the movable form
    assert read_manifest(data)["settings"]["ref_model"] == "../../ref_model"

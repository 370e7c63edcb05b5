"""`python python/stargraph.py --preset smoke`: every stage runs, results are well formed, a rerun resumes."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qsharp_ext.errors import UserError
from tests.experiments.conftest import PYTHON_DIR

METHODS = ("pi_ref", "reinforce", "dpo", "rpo", "cd", "qsharp")


def run_driver(out, cache, *extra):
    cmd = [sys.executable, str(PYTHON_DIR / "stargraph.py"), "--preset", "smoke", "--degree", "2", "--path-len", "3"]
    return subprocess.run(
        [*cmd, "--out", str(out), "--cache", str(cache), *extra], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stargraph")
    result = run_driver(root / "run", root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_smoke_run_writes_results_for_every_method(smoke_run):
    root, _ = smoke_run
    out = root / "run"
    result = json.loads((out / "results.json").read_text())
    for method in METHODS:
        assert 0.0 <= result[method] <= 1.0 and 0.0 <= result["se"][method] <= 0.5
    assert result["kl_cd"] >= 0 and result["kl_qsharp"] >= 0
    assert set(result["seconds"]) >= {"pretrain", "pi_ref", "reinforce", "dpo", "rpo", "qsharp_cd", "total"}
    assert result["chance"] == 0.5 and result["config"]["degree"] == 2
    assert "| Q♯ |" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 1000 and (out / "hops.png").stat().st_size > 1000
    assert set(result["value_hops"]) == {"qsharp_round_1", "qsharp_round_2"}  # CD reads Q♯'s model
    assert not list((out / "pipeline").glob("round-*/cd")) and "CD steers with Q♯'s" in (out / "results.md").read_text()
    for accuracy in result["value_hops"].values():  # G(2, 3): the first step is 1 hop from the goal
        assert set(accuracy) == {"1", "0"} and all(0.0 <= a <= 1.0 for a in accuracy.values())
    assert result["future_tokens"] == 2 and "| Q♯ round 2 |" in (out / "results.md").read_text()
    assert len(list((root / "cache").iterdir())) == 1  # π_ref cached once


def test_rerun_resumes_without_redoing_stages(smoke_run):
    root, _ = smoke_run
    stages = root / "run" / "stages"
    before = {p.name: p.read_text() for p in stages.iterdir()}
    result = run_driver(root / "run", root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name: p.read_text() for p in stages.iterdir()} == before
    assert "[stage]" not in result.stdout


def test_no_cd_trains_and_reports_q_sharp_alone(smoke_run, tmp_path):
    root, _ = smoke_run  # its cache holds π_ref, so only post-training runs
    result = run_driver(tmp_path / "run", root / "cache", "--no-cd", "--rounds", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "cd" not in summary and "kl_cd" not in summary and "cd" not in summary["se"]
    assert 0.0 <= summary["qsharp"] <= 1.0 and summary["kl_qsharp"] >= 0
    assert set(summary["value_hops"]) == {"qsharp_round_1"}
    assert not (tmp_path / "run" / "pipeline" / "round-1" / "cd").exists()
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| Q♯ |" in table and "| CD |" not in table and "CD steers" not in table


def test_cd_own_model_trains_cd_its_mean_head(smoke_run, tmp_path):
    root, _ = smoke_run
    result = run_driver(tmp_path / "run", root / "cache", "--cd-own-model", "--rounds", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0.0 <= summary["cd"] <= 1.0 and summary["kl_cd"] >= 0
    assert set(summary["value_hops"]) == {"qsharp_round_1", "cd_round_1"}
    saved = json.loads((tmp_path / "run" / "pipeline" / "round-1" / "cd" / "model" / "qsharp_value.json").read_text())
    assert saved["kind"] == "mean"


def test_help_lists_presets_and_flags():
    cmd = [sys.executable, str(PYTHON_DIR / "stargraph.py"), "--help"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0
    assert "--degree" in result.stdout and "--path-len" in result.stdout and "smoke" in result.stdout


def test_a_run_folder_refuses_other_settings(smoke_run):
    root, _ = smoke_run
    result = run_driver(root / "run", root / "cache", "--rl-steps", "4")
    assert result.returncode != 0 and "rl_steps" in result.stderr and "Traceback" not in result.stderr


def test_pi_ref_pretraining_can_start_from_another_star_graphs_pi_ref(smoke_run, tmp_path):
    stargraph = pytest.importorskip("stargraph")  # python/ is on the path (conftest.py)
    root, _ = smoke_run
    (init,) = (root / "cache").iterdir()  # the smoke run's G(2, 3) π_ref
    cfg = stargraph.parse_config(["--preset", "smoke", "--degree", "3", "--path-len", "3", "--pretrain-steps", "0"])
    cfg = dataclasses.replace(cfg, cache=tmp_path, ref_init=init)
    task = stargraph.make_task(cfg)
    folder = stargraph.pretrained_reference(cfg, task, task.tokenizer())
    assert (
        folder.parent == tmp_path
        and folder.name != stargraph.reference_folder(dataclasses.replace(cfg, ref_init=None), task).name
    )  # another cache entry than a π_ref from random weights
    warm, start = stargraph.load_policy(folder).state_dict(), stargraph.load_policy(init).state_dict()
    assert warm.keys() == start.keys() and all(torch.equal(warm[k], start[k]) for k in warm)  # 0 steps: unchanged
    wider = dataclasses.replace(cfg, cache=tmp_path / "other", ref_hidden=96)
    with pytest.raises(UserError, match="same labels, layers and width"):
        stargraph.pretrained_reference(wider, task, task.tokenizer())


def test_the_curriculum_starts_pi_ref_and_the_value_models_from_a_g2_run(tmp_path):
    stargraph = pytest.importorskip("stargraph")
    cmd = [sys.executable, str(PYTHON_DIR / "stargraph.py"), "--preset", "smoke", "--degree", "3", "--path-len", "3"]
    unmoved = ("--warm-pretrain-steps", "0", "--value-lr", "1e-12", "--no-cd", "--rounds", "1")  # nothing may move
    extra = ("--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"), *unmoved)
    result = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (first,) = (tmp_path / "cache").glob("G2-3-smoke-run-*")  # the smoke G(2, 3) run, kept in the cache
    assert json.loads((first / "results.json").read_text())["config"]["degree"] == 2
    pretrain = json.loads((tmp_path / "run" / "stages" / "pretrain.json").read_text())
    first_ref = json.loads((first / "stages" / "pretrain.json").read_text())["folder"]
    warm, start = (stargraph.load_policy(Path(f)).state_dict() for f in (pretrain["folder"], first_ref))
    assert pretrain["folder"] != first_ref and all(torch.equal(warm[k], start[k]) for k in start)  # G(2,3)'s π_ref
    trained, init = (
        stargraph.ValueModel.from_pretrained(f / "pipeline" / f"round-{r}" / "qsharp" / "model").backbone.state_dict()
        for f, r in ((tmp_path / "run", 1), (first, 2))
    )
    assert init.keys() == trained.keys()
    assert all(torch.allclose(trained[k], init[k], atol=1e-6) for k in init)  # G(2,3)'s value model's layers

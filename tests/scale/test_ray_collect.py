"""`collect --backend ray` on a local 2-CPU Ray instance: the same data as the local backend, shards kept
and the run finished when a worker is killed mid-run."""

import dataclasses

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.rollout_data import read_manifest, read_rollouts, read_shard, shard_name
from qsharp_ext.rollouts import CollectConfig, run_collect
from tests.scale.conftest import CrashingTask

pytest.importorskip("ray")


def config(out, model_dirs, **changes) -> CollectConfig:
    base = CollectConfig(
        out=out, ref_model=str(model_dirs[0]), samples_per_prompt=3, max_new_tokens=5, top_k=5, prompts_per_shard=2,
        seed=3, device="cpu",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def local_rounds(small_task, model_dirs, tmp_path_factory) -> dict[int, CollectConfig]:
    """Round 1 (π_ref roll-in) and round 2 (guided roll-in) collected by the local backend."""
    root = tmp_path_factory.mktemp("local")
    rounds = {
        1: config(root / "round1", model_dirs),
        2: config(root / "round2", model_dirs, value_model=str(model_dirs[1]), round=2, eta=0.3),
    }
    for cfg in rounds.values():
        run_collect(cfg, small_task, progress=False)
    return rounds


@pytest.mark.parametrize("round_k", [1, 2])
def test_ray_data_equals_the_local_data(ray_local, small_task, local_rounds, tmp_path, round_k):
    local = local_rounds[round_k]
    cfg = dataclasses.replace(local, out=tmp_path / "ray", backend="ray", num_workers=2)
    run_collect(cfg, small_task, progress=False)
    assert read_manifest(cfg.out) == read_manifest(local.out)  # same shards, rows and settings
    assert read_rollouts([cfg.out]) == read_rollouts([local.out])


def test_a_killed_worker_is_restarted_and_the_data_is_unchanged(ray_local, small_task, local_rounds, tmp_path):
    kills = tmp_path / "kills"
    kills.write_text("1")
    problems = small_task.train_problems()
    task = CrashingTask(kills, crash_prompt=problems[5].id, n_train=8, n_eval=4, seed=1)
    cfg = dataclasses.replace(local_rounds[1], out=tmp_path / "ray", backend="ray", num_workers=2)
    run_collect(cfg, task, progress=False)
    assert kills.read_text() == "0"  # the worker did die once
    assert read_rollouts([cfg.out]) == read_rollouts([local_rounds[1].out])


def test_a_worker_that_keeps_dying_loses_no_finished_shard_and_the_rerun_completes(
    ray_local, small_task, local_rounds, tmp_path
):
    kills = tmp_path / "kills"
    kills.write_text("100")  # more than the restarts Ray is allowed
    problems = small_task.train_problems()
    task = CrashingTask(kills, crash_prompt=problems[-1].id, n_train=8, n_eval=4, seed=1)  # in the last shard
    cfg = dataclasses.replace(local_rounds[1], out=tmp_path / "ray", backend="ray", num_workers=2)
    with pytest.raises(UserError, match="run the same command again"):
        run_collect(cfg, task, progress=False)
    done = read_manifest(cfg.out)["shards"]
    assert len(done) >= 2 and shard_name(3) not in done  # the last shard is handed out after two finish
    kept = {name: (cfg.out / name).stat().st_mtime_ns for name in done}
    local = read_rollouts([local_rounds[1].out])
    for name, rows in done.items():  # each finished shard is whole and holds the local backend's rows
        shard = read_shard(cfg.out / name)
        assert len(shard) == rows and all(r in local for r in shard)
    kills.write_text("0")
    run_collect(cfg, task, progress=False)
    assert read_rollouts([cfg.out]) == read_rollouts([local_rounds[1].out])
    assert {name: (cfg.out / name).stat().st_mtime_ns for name in done} == kept  # not redone


def test_the_command_line_runs_on_ray(ray_local, local_rounds, model_dirs, tmp_path, capsys):
    from qsharp_ext.cli import main

    local = local_rounds[1]
    args = [
        "collect", "--out", str(tmp_path / "cli"), "--ref-model", str(model_dirs[0]), "--samples-per-prompt", "3",
        "--max-new-tokens", "5", "--top-k", "5", "--prompts-per-shard", "2", "--seed", "3", "--device", "cpu",
        "--max-prompts", "4", "--backend", "ray", "--num-workers", "2",
    ]  # fmt: skip
    assert main(args) == 0
    assert "collected 12 samples" in capsys.readouterr().out
    same_locally = dataclasses.replace(local, out=tmp_path / "local", max_prompts=4)  # the command's default task
    run_collect(same_locally, progress=False)
    assert read_rollouts([tmp_path / "cli"]) == read_rollouts([same_locally.out])


def test_help_documents_the_scale_out_fields(capsys):
    from qsharp_ext.cli import main

    for command in ("collect", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert all(flag in text for flag in ("--backend {local,ray}", "--ray-address", "--num-workers", "--vllm"))

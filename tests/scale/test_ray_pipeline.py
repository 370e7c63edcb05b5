"""`pipeline --backend ray`: collect and evaluate go to Ray workers, and the run is the local one."""

import dataclasses
import math

import pytest

from qsharp_ext.pipeline import PipelineConfig, run_pipeline
from qsharp_ext.rollout_data import read_rollouts

pytest.importorskip("ray")


def test_a_pipeline_on_ray_equals_the_local_one(ray_local, tmp_path):
    local = PipelineConfig(
        out=tmp_path / "local", rounds=1, task="first_token", task_options=("n_train=8", "n_eval=4"),
        collect=dict(samples_per_prompt=2), max_new_tokens=3, top_k=6, train_cd=False,
        train=dict(num_layers=1, steps=6, batch_size=4, lr=1e-3, eval_every=3, save_every=3),
        evaluate=dict(etas=(None, 0.3), num_samples=2), evaluate_every_round=False, device="cpu",
    )  # fmt: skip
    on_ray = dataclasses.replace(local, out=tmp_path / "ray", backend="ray", num_workers=2)
    expected, got = run_pipeline(local), run_pipeline(on_ray)
    data = [read_rollouts([run.out / "round-1" / "data"]) for run in (local, on_ray)]
    assert data[0] == data[1] and len(data[0]) == 16  # guided roll-in on Ray: tests/scale/test_ray_collect.py
    assert [(r["method"], r["eta"]) for r in got] == [("pi_ref", None), ("qsharp", 0.3)]
    for row, want in zip(got, expected, strict=True):
        for key in row.keys() - {"tok_s", "kl"}:
            assert row[key] == want[key], key
        assert math.isclose(row["kl"], want["kl"], rel_tol=1e-6, abs_tol=1e-9)  # one-thread actors: last bits

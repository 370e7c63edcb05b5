"""`qsharp-ext train` under `accelerate launch` with 2 CPU processes (gloo): the loss curve of the single-process
run at the same global batch."""

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qsharp_ext.rollout_data import Rollout, write_shard
from qsharp_ext.training import TrainConfig, run_train

pytest.importorskip("accelerate")

STEPS, BATCH = 6, 8


@pytest.fixture(scope="module")
def rollouts_dir(tmp_path_factory) -> Path:
    """Trajectories of uneven lengths and switch steps, so the two halves of a batch hold different numbers of
    target positions (the case a plain average of per-process means gets wrong)."""
    folder, rng, rows = tmp_path_factory.mktemp("data"), random.Random(0), []
    for p in range(12):
        prompt = [rng.randrange(3, 40) for _ in range(rng.randint(2, 5))]
        for s in range(4):
            completion = [rng.randrange(3, 40) for _ in range(rng.randint(1, 8))]
            rows.append(
                Rollout(
                    prompt_id=f"p{p}", sample_index=s, round=1, eta=None, seed=p * 10 + s, prompt_ids=prompt,
                    completion_ids=completion, switch=rng.randint(0, len(completion) - 1),
                    reward=float(completion[0] % 3 == 0),
                )
            )  # fmt: skip
    write_shard(folder, 0, rows)
    return folder


def train_args(out: Path, data: Path, ref: Path) -> list[str]:
    return [
        "--out", str(out), "--data", str(data), "--ref-model", str(ref), "--num-layers", "1", "--steps", str(STEPS),
        "--batch-size", str(BATCH), "--lr", "3e-3", "--warmup-steps", "2", "--eval-every", "3", "--save-every", "3",
        "--eval-fraction", "0.25", "--device", "cpu",
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_follow_the_single_process_loss_curve(rollouts_dir, model_dirs, tmp_path):
    from qsharp_ext.config import parse_config

    single = parse_config(TrainConfig, train_args(tmp_path / "single", rollouts_dir, model_dirs[0]), "train", "")
    run_train(single, progress=False)
    launcher = Path(sys.executable).with_name("accelerate")
    # --multi_gpu is accelerate's torchrun launcher; without a GPU the processes join over gloo on the CPU
    # (its --cpu flag alone starts one process unless an MPI hostfile is given).
    cmd = [
        str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "qsharp_ext.cli", "train", *train_args(tmp_path / "ddp", rollouts_dir, model_dirs[0]),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert [r["step"] for r in two] == list(range(STEPS + 1))  # one writer: no line twice
    for a, b in zip(one, two):
        for key in ("train_loss", "eval_loss", "lr"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert one[-1]["train_loss"] < one[1]["train_loss"] or one[-1]["eval_loss"] != one[0]["eval_loss"]  # it trained
    assert (tmp_path / "ddp" / "summary.json").is_file() and (tmp_path / "ddp" / "model").is_dir()

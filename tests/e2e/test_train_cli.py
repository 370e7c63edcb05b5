"""`qsharp-ext train` as a user runs it: killed with SIGKILL mid-run and rerun, it ends with the same weights
as an uninterrupted run; a corrupt shard is named in one clear sentence."""

import os
import signal
import subprocess
import sys
import time

from tests.e2e.test_cli import run_cli
from tests.engine.test_training import assert_same_weights, data_folder, ref_folder, synthetic_rollouts  # noqa: F401

CLI = "import sys; from qsharp_ext.cli import main; sys.exit(main())"


def train_args(out, ref, data) -> list[str]:
    return [
        "train", "--out", str(out), "--data", str(data), "--ref-model", str(ref), "--num-layers", "1",
        "--steps", "200", "--batch-size", "8", "--lr", "0.003", "--save-every", "10", "--eval-every", "100",
        "--device", "cpu",
    ]  # fmt: skip


def test_kill_9_then_rerun_gives_the_uninterrupted_weights(tmp_path, ref_folder, data_folder):  # noqa: F811
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", CLI, *train_args(killed, ref_folder, data_folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while not any((killed / "checkpoints").glob("step-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    assert any((killed / "checkpoints").glob("step-*"))
    resumed = run_cli(*train_args(killed, ref_folder, data_folder))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = run_cli(*train_args(tmp_path / "straight", ref_folder, data_folder))
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert_same_weights(killed / "model", tmp_path / "straight" / "model")


def test_a_corrupt_shard_is_named(tmp_path, ref_folder, data_folder):  # noqa: F811
    broken = tmp_path / "data"
    broken.mkdir()
    for item in data_folder.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    shard = sorted(broken.glob("shard-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: len(shard.read_bytes()) // 2])  # cut in half, as a crashed copy would
    result = run_cli(*train_args(tmp_path / "run", ref_folder, broken))
    assert result.returncode == 1 and shard.name in result.stderr and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "model").exists()

"""`python -m qsharp_ext.rollouts` (collect) as a user runs it: kill -9 mid-run, rerun, same data; clear errors."""

import os
import signal
import subprocess
import sys
import time

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.rollout_data import read_manifest, read_rollouts
from qsharp_ext.rollouts import CollectConfig, main, run_collect
from qsharp_ext.tasks import FirstTokenTask
from qsharp_ext.tasks.first_token import make_tiny_reference

SHARDS = 6

# The real entry point, slowed down after each shard so that the kill lands mid-run.
SLOW_COLLECT = """
import sys, time
import qsharp_ext.rollouts as rollouts
write = rollouts.write_shard
def write_slowly(*args):
    write(*args)
    time.sleep(0.5)
rollouts.write_shard = write_slowly
sys.exit(rollouts.main())
"""


def collect_args(out, ref) -> list[str]:
    return [
        "--out", str(out), "--ref-model", str(ref), "--max-prompts", str(SHARDS), "--prompts-per-shard", "1",
        "--samples-per-prompt", "3", "--max-new-tokens", "6", "--top-k", "5", "--seed", "3", "--device", "cpu",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ref_folder(tmp_path_factory):
    task = FirstTokenTask()  # the defaults: what `--task first_token` builds
    folder = tmp_path_factory.mktemp("ref")
    make_tiny_reference(task, seed=0).save_pretrained(folder)
    task.tokenizer().save_pretrained(folder)
    return folder


def wait_for_first_shard(proc: subprocess.Popen, out, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "manifest.json").is_file() or not read_manifest(out)["shards"]:
        assert proc.poll() is None, f"collect ended before its first shard: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no shard appeared in time"
        time.sleep(0.02)


def test_kill_9_then_rerun_gives_the_uninterrupted_data(ref_folder, tmp_path, capsys):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_COLLECT, *collect_args(killed, ref_folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_first_shard(proc, killed)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert 1 <= len(read_manifest(killed)["shards"]) < SHARDS  # it really was interrupted

    assert main(collect_args(killed, ref_folder)) == 0  # the rerun, in this process: it only needs to finish
    assert f"collected {SHARDS * 3} samples" in capsys.readouterr().out

    cfg = CollectConfig(
        out=clean, ref_model=str(ref_folder), max_prompts=SHARDS, prompts_per_shard=1, samples_per_prompt=3,
        max_new_tokens=6, top_k=5, seed=3, device="cpu",
    )  # fmt: skip
    run_collect(cfg, progress=False)
    assert read_rollouts([killed]) == read_rollouts([clean])
    assert read_manifest(killed) == read_manifest(clean)


def test_help_documents_the_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--out", "--ref-model", "--value-model", "--samples-per-prompt", "--eta", "--prompts-per-shard"):
        assert flag in help_text


def test_bad_input_is_one_clear_sentence(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "o"), "--ref-model", str(tmp_path / "missing"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_corrupt_or_missing_shard_is_collected_again_by_the_same_command(ref_folder, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(collect_args(out, ref_folder)) == 0
    clean = read_rollouts([out])
    cut, gone = sorted(out.glob("shard-*.parquet"))[1:3]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # as a crashed copy leaves it
    gone.unlink()
    with pytest.raises(UserError, match="rerun the command that collected it"):
        read_rollouts([out])
    capsys.readouterr()
    assert main(collect_args(out, ref_folder)) == 0
    assert f"{cut.name}, {gone.name}" in capsys.readouterr().err
    assert read_rollouts([out]) == clean

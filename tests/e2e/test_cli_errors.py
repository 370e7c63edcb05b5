"""A user's mistake on the command line ends in one sentence on stderr and exit 1, before any model loads or
anything is computed, and nothing the user had is lost: an --out that is a file (or, for generate, a folder),
an output location that cannot be written, and values out of range."""

import os

import pytest

from qsharp_ext import evaluation, exact, generate_cli, models, pipeline, rollouts, training
from qsharp_ext.cli import main

# Each command's other arguments: enough to reach its checks (the models are never loaded).
COMMANDS = {
    "collect": ["collect", "--ref-model", "ref", "--device", "cpu"],
    "train": ["train", "--data", "data", "--ref-model", "ref", "--device", "cpu"],
    "evaluate": ["evaluate", "--ref-model", "ref", "--device", "cpu"],
    "pipeline": ["pipeline", "--config", "configs/smoke.yaml"],
    "demo": ["demo"],
    "models": ["models", "prepare", "smollm2-135m"],
    "generate": ["generate", "--ref-model", "ref", "--prompt", "w1", "--etas", "None"],
}


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Any model load (or the pipeline's tiny π_ref, the demo's, a GGUF conversion) fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    for module in (rollouts, evaluation, generate_cli, training):
        monkeypatch.setattr(module, "load_reference", fail)
    monkeypatch.setattr(pipeline, "prepare_reference", fail)
    monkeypatch.setattr(exact, "tiny_reference_model", fail)
    monkeypatch.setattr(models, "smollm2_gguf_path", fail)


def one_sentence(capsys, command: str, argv: list[str]) -> str:
    """Run the CLI in this process; it must exit 1 with one line `qsharp-ext CMD: error: ...`; return that line."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"qsharp-ext {command}: error: "), err
    return err


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "generate"])
def test_an_out_that_is_a_file_is_refused_and_kept(command, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    err = one_sentence(capsys, command, [*COMMANDS[command], "--out", str(out)])
    assert f"out {out} is a file, not a folder" in err
    assert out.read_text() == "keep me"


def test_generate_refuses_an_out_that_is_a_folder_and_keeps_it(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "old.jsonl").write_text("keep me")
    err = one_sentence(capsys, "generate", [*COMMANDS["generate"], "--out", str(out)])
    assert f"out {out} is a folder" in err
    assert [p.name for p in out.iterdir()] == ["old.jsonl"] and (out / "old.jsonl").read_text() == "keep me"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_out_inside_a_file_is_refused(command, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    out = tmp_path / "notes.txt" / ("c.jsonl" if command == "generate" else "run")
    err = one_sentence(capsys, command, [*COMMANDS[command], "--out", str(out)])
    assert f"out {out} cannot be created: {tmp_path / 'notes.txt'} is a file" in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_out_in_a_folder_without_write_permission_is_refused(command, tmp_path, capsys, monkeypatch):
    """Write permission as os.access reports it (tests may run as root, whom chmod does not stop)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.realpath(path) != str(locked) and access(path, mode))
    out = locked / "sub" / ("c.jsonl" if command == "generate" else "run")
    err = one_sentence(capsys, command, [*COMMANDS[command], "--out", str(out)])
    assert f"out {out} cannot be written: no permission to write in {locked}" in err
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder; the os.access test covers it")
@pytest.mark.parametrize("command", ["collect", "generate"])
def test_a_read_only_folder_is_refused(command, tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        out = locked / "sub" / ("c.jsonl" if command == "generate" else "run")
        err = one_sentence(capsys, command, [*COMMANDS[command], "--out", str(out)])
        assert "no permission to write in" in err
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("generate", ["--num-samples", "0"], "num_samples must be at least 1, got 0"),
        ("generate", ["--max-new-tokens", "0"], "max_new_tokens must be at least 1, got 0"),
        ("evaluate", ["--max-prompts", "-3"], "max_prompts must be at least 1 (or None for all), got -3"),
    ],
)
def test_values_out_of_range_are_one_sentence_naming_the_field(command, args, message, tmp_path, capsys):
    out = tmp_path / ("c.jsonl" if command == "generate" else "run")
    err = one_sentence(capsys, command, [*COMMANDS[command], "--out", str(out), *args])
    assert message in err and not out.exists()

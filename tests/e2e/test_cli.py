"""The `qsharp-ext` command: help, version, the exact demo end to end, and clear errors for bad input."""

import json
import subprocess
import sys

import pytest

from qsharp_ext.cli import main


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, as a user runs it."""
    code = "import sys; from qsharp_ext.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout and "--config" in result.stdout


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("qsharp-ext ")


def test_command_help_documents_every_field():
    result = run_cli("demo", "--help")
    assert result.returncode == 0
    for field in ("--out", "--vocab-size", "--horizon", "--etas", "--seed"):
        assert field in result.stdout


def test_demo_end_to_end_matches_the_exact_optimum(tmp_path):
    out = tmp_path / "run"
    result = run_cli("demo", "--out", str(out), "--horizon", "4", "--etas", "1", "0.1")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["eta"]): r for r in report["rows"]}
    for eta in (1.0, 0.1):
        q, opt = rows["qsharp", eta], rows["optimal", eta]
        assert q["max_abs_gap_to_optimal"] < 1e-12
        assert abs(q["kl"] - opt["kl"]) < 1e-9 and abs(q["accuracy"] - opt["accuracy"]) < 1e-12
        assert q["accuracy"] > rows["pi_ref", None]["accuracy"]
    # CD is not the KL-regularized optimum: at η = 0.1 it spends more KL than π* does.
    assert rows["cd", 0.1]["kl"] > rows["optimal", 0.1]["kl"] + 1e-3
    assert (out / "pareto.png").stat().st_size > 1000 and "| qsharp |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--etas", "0"], "etas must be"),
        (["demo", "--config", "missing.yaml"], "does not exist"),
        (["demo", "--init-std", "1.5"], "init_std must be in (0, 1]"),
        (["nonsense"], "unknown command"),
    ],
)
def test_bad_input_is_one_clear_sentence(args, message, tmp_path):
    result = run_cli(*args, "--out", str(tmp_path)) if args[0] == "demo" else run_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_yaml_config_with_flag_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"horizon: 2\netas: [0.5]\nout: {tmp_path / 'a'}\n")
    result = run_cli("demo", "--config", str(config), "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "b" / "results.json").read_text())
    assert report["config"]["horizon"] == 2 and report["config"]["etas"] == [0.5]
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("horizon: [1\n", "not valid YAML"),
        ("colour: red\n", "unknown field"),
        ("horizon: two\n", "c.yaml: horizon must be an integer, not 'two'"),
        ("horizon: 2.5\n", "c.yaml: horizon must be an integer, not 2.5"),
    ],
)
def test_bad_yaml_is_one_clear_sentence(tmp_path, text, message):
    """Each names the file; a value of the wrong type also names its field (not tyro's flag)."""
    config = tmp_path / "c.yaml"
    config.write_text(text)
    result = run_cli("demo", "--config", str(config))
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr

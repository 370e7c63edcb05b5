"""bench/gpu_check.py, the one GPU script, run on the CPU at its --cpu-smoke size so that it cannot rot.

Every part runs and lands in gpu_check.json / .md; a part that runs out of time or fails is recorded and the
others still run; a crash in the kernel tests is pinned on the test that was running. The GPU-only commands
are checked as commands. No wall-clock time is asserted anywhere.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
BUDGET = ["--budget-s", "3600"]  # this CPU is shared: no part may be cut short by the default 8-minute budget


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_help_explains_the_parts_and_the_command():
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    for text in ("bench/gpu.sh", "--cpu-smoke", "--limit", "--budget-s", "decode-llama8b", "kernel-tests", "H200"):
        assert text in result.stdout


@pytest.mark.slow
def test_cpu_smoke_runs_every_part(tmp_path):
    result = run_script("--cpu-smoke", "--out", str(tmp_path), *BUDGET)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "cpu-smoke"
    report = json.loads((folder / "gpu_check.json").read_text())
    parts = report["parts"]
    assert list(parts) == ["build", "kernel-bench", "decode-llama8b", "kernel-tests", "decode-smollm2", "csrc-tests"]
    assert {name: p["status"] for name, p in parts.items()} == {
        **{name: "ok" for name in parts if name != "csrc-tests"},
        "csrc-tests": "skipped",
    }
    assert parts["build"]["result"]["imports"]
    assert parts["kernel-tests"]["result"]["passed"] > 0 and not parts["kernel-tests"]["result"]["failed_tests"]
    assert all(row["torch_ms"] > 0 for row in parts["kernel-bench"]["rows"])
    for name in ("decode-llama8b", "decode-smollm2"):
        rows = parts[name]["rows"]
        assert [(r["batch"], r["run"]) for r in rows] == [
            (b, run)
            for b in (2, 1)
            for run in ("plain", "hf_generate", "guided_vtype", "guided_qtype", "guided_shared_trunk")
        ]
        assert all(r["ms_per_token"] > 0 and r["over_plain"] > 0 and "error" not in r for r in rows)
        assert parts[name]["config"]["dtype"] == "bfloat16"
    markdown = (folder / "gpu_check.md").read_text()
    assert "## decode-llama8b: ok" in markdown and "over_plain" in markdown
    assert "=== decode-smollm2" in (folder / "gpu_check.log").read_text()


@pytest.mark.slow
def test_a_part_that_times_out_or_fails_is_recorded_and_the_others_still_run(tmp_path):
    # kernel-bench gets half a second (it cannot even import torch); the cuda backend cannot run on the CPU,
    # so every decoder of ours fails in decode-smollm2 while HF generate, which does not use it, still runs.
    result = run_script(
        "--cpu-smoke", "--out", str(tmp_path), "--parts", "build,kernel-bench,decode-smollm2",
        "--limit", "kernel-bench=0.5", "--backend", "cuda", *BUDGET,
    )  # fmt: skip
    assert result.returncode == 1
    parts = json.loads((tmp_path / "cpu-smoke" / "gpu_check.json").read_text())["parts"]
    assert [parts[name]["status"] for name in parts] == ["ok", "timeout", "failed"]
    assert parts["kernel-bench"]["returncode"] is None
    rows = {row["run"]: row for row in parts["decode-smollm2"]["rows"] if row["batch"] == 2}
    assert "cuda backend" in rows["guided_vtype"]["error"] and "error" not in rows["hf_generate"]
    assert rows["hf_generate"]["ms_per_token"] > 0
    assert "## kernel-bench: timeout" in (tmp_path / "cpu-smoke" / "gpu_check.md").read_text()


def test_the_shell_entry_point_runs_the_driver():
    env = os.environ | {"PYTHON": sys.executable}
    result = subprocess.run([str(ROOT / "bench" / "gpu.sh"), "--help"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--cpu-smoke" in result.stdout


def test_unknown_parts_are_refused_in_one_sentence(tmp_path):
    result = run_script("--cpu-smoke", "--out", str(tmp_path), "--parts", "build,nonsense")
    assert result.returncode == 2 and "nonsense" in result.stderr and "Traceback" not in result.stderr


def test_a_crash_in_the_kernel_tests_is_pinned_on_the_running_test(gpu_check):
    output = (
        "tests/kernels/test_fused_step.py::test_expand[cpp] PASSED [ 33%]\n"
        "tests/kernels/test_fused_step.py::test_expand[cuda] FAILED [ 66%]\n"
        "tests/kernels/test_fused_step.py::test_bad_shapes_raise_clear_errors[cuda] "
        "Fatal Python error: Segmentation fault\n\nCurrent thread 0x00007f (most recent call first):\n"
    )
    result = gpu_check.parse_pytest(output, -11)
    assert result["crashed_in"] == "tests/kernels/test_fused_step.py::test_bad_shapes_raise_clear_errors[cuda]"
    assert (result["passed"], result["failed"]) == (1, 1)
    assert result["failed_tests"] == ["tests/kernels/test_fused_step.py::test_expand[cuda]"]
    finished = gpu_check.parse_pytest(output.splitlines()[0] + "\n=== 1 passed, 2 skipped in 3.1s ===\n", 0)
    assert (finished["passed"], finished["skipped"]) == (1, 2) and "crashed_in" not in finished


def test_ctest_outcomes_are_read(gpu_check):
    output = (
        "1/3 Test #1: qsharp_math ......................   Passed    0.01 sec\n"
        "2/3 Test #3: cuda_fused_step ..................***Failed    0.50 sec\n"
        "3/3 Test #2: fused_step_math ..................***Skipped   0.10 sec\n"
    )
    result = gpu_check.parse_ctest(output)
    assert result["tests"] == {"qsharp_math": "Passed", "cuda_fused_step": "Failed", "fused_step_math": "Skipped"}
    assert not result["all_passed"]


def test_gpu_commands_build_for_this_gpus_architecture(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_capability", lambda: (9, 0))
    args = gpu_check.argparse.Namespace(cpu_smoke=False, repeats=20, backend=None, ref_layers=None)
    commands, env, _ = gpu_check.part_commands("build", args, "python3", tmp_path)
    assert commands[0] == ["python3", "setup.py", "build_ext", "--inplace"]
    assert (env["QSHARP_EXT_CUDA"], env["TORCH_CUDA_ARCH_LIST"]) == ("1", "9.0")
    commands, _, _ = gpu_check.part_commands("csrc-tests", args, "python3", tmp_path)
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in commands[0] and commands[-1][0] == "ctest"
    commands, _, _ = gpu_check.part_commands("kernel-tests", args, "python3", tmp_path)
    pytest = ["python3", "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider"]
    assert commands == [[*pytest, "tests/kernels", "tests/engine/test_fixed_shapes.py"]]


def test_the_benches_it_runs_import_without_tyro():
    """The GPU machine runs this checkout from source with whatever Python it has: the engine and the two bench
    modules gpu_check imports must not need tyro (only their own command lines do)."""
    code = (
        "import sys; sys.modules['tyro'] = None; sys.path.insert(0, 'bench'); "
        "import decode_speed, fused_step_speed, qsharp_ext.generate, qsharp_ext.guidance"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

"""The CPU bench scripts (step overhead, KV cache, candidate pruning, int8 value model) at tiny sizes, so that they
cannot rot: each writes its JSON and Markdown with one row per decoder, context or η (a time is never asserted)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / script), *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def test_step_overhead_times_every_decoder(tmp_path):
    run("step_overhead.py", "--out", str(tmp_path), "--new-tokens", "3", "--repeats", "1", "--vocab", "64")
    result = json.loads((tmp_path / "step_overhead.json").read_text())
    names = ["hf_generate", "engine_plain", "qsharp", "qsharp_qtype", "qsharp_shared"]
    names += ["engine_plain_fixed", "qsharp_fixed"]
    assert list(result["ms_per_step"]) == names and result["over_hf_generate"]["hf_generate"] == 1
    assert all(v > 0 for v in result["ms_per_step"].values())
    assert "| qsharp_shared |" in (tmp_path / "step_overhead.md").read_text()


@pytest.mark.slow
def test_kv_cache_bench_times_both_caches(tmp_path):
    run("kv_cache.py", "--out", str(tmp_path), "--contexts", "4", "9", "--batch", "2", "--steps", "1", "--threads", "1")
    rows = json.loads((tmp_path / "kv_cache.json").read_text())["rows"]
    assert [r["context"] for r in rows] == [4, 9]
    assert all(r["dynamic_ms"] > 0 and r["reserved_ms"] > 0 for r in rows)


def test_candidate_pruning_needs_fewer_candidates_as_eta_grows(tmp_path):
    """The sound rule's budget ε / (e^{Δ/η} − 1) grows with η, so the candidates it must score cannot grow."""
    run("candidate_pruning.py", "--out", str(tmp_path), "--batch", "2", "--new-tokens", "3", "--threads", "1",
        "--etas", "0.1", "1", "10", "100")  # fmt: skip
    rows = json.loads((tmp_path / "candidate_pruning.json").read_text())["rows"]
    needed = [r["mean_per_row"] for r in rows]
    assert needed == sorted(needed, reverse=True) and all(0 <= n <= 20 for n in needed)
    assert all(r["mean_batch_max"] >= r["mean_per_row"] for r in rows)


@pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines, reason="no fbgemm (int8 GEMMs)")
def test_int8_value_model_bench_reports_speed_and_policy_shift(tmp_path):
    run("int8_value_model.py", "--out", str(tmp_path), "--batch", "2", "--new-tokens", "3", "--kl-batch", "2",
        "--kl-tokens", "3", "--threads", "1", "--etas", "0.1", "10", "--repeats", "1")  # fmt: skip
    result = json.loads((tmp_path / "int8_value_model.json").read_text())
    assert list(result["tok_s"]) == ["plain", "vtype_float32", "vtype_int8", "vtype_int8_float_down_proj"]
    assert all(v > 0 for v in result["tok_s"].values())
    kl = result["kl"]
    assert [(r["int8"], r["eta"]) for r in kl] == [
        (name, eta) for name in ("vtype_int8", "vtype_int8_float_down_proj") for eta in (0.1, 10)
    ]
    assert all(r["steps"] == 3 for r in kl)
    # exact KL of two distributions: never negative beyond rounding, never NaN; and int8 does move the policy
    assert all(math.isfinite(r["kl_per_step_max"]) and r["kl_per_step_mean"] > -1e-7 for r in kl)
    assert all(r["kl_per_step_max"] > 0 for r in kl)
    assert "| vtype_int8 |" in (tmp_path / "int8_value_model.md").read_text()

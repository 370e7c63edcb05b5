"""Everything a GPU must show, in one command that ends within 8 minutes on one H200.

    bench/gpu.sh                          # on a GPU machine: bench/results/<gpu>/gpu_check.{json,md,log}
    bench/gpu.sh --out "$OUT"             # through the device tool: $OUT/<gpu>/..., which comes back
    python bench/gpu_check.py --cpu-smoke --out /tmp/smoke   # tiny shapes on the CPU (a test runs this)

<gpu> is the device's name in lower case without "NVIDIA" ("h200"); with --cpu-smoke it is "cpu-smoke".
The parts run in this order, each in its own process with its own time limit (--limit NAME=SECONDS), all
within --budget-s. A part that fails, crashes or runs out of time is recorded (status, return code, the
end of its output) and the next part still runs. gpu_check.json and gpu_check.md are rewritten after every
part and after every measured row, so whatever ran is on disk if the machine is taken away; gpu_check.log
holds every part's full output.

  build           the extension with its CUDA kernels (`setup.py build_ext --inplace`, QSHARP_EXT_CUDA=1,
                  this GPU's architecture only), then a fresh process imports qsharp_ext._C and reports
                  has_cuda(). With --cpu-smoke nothing is compiled: the installed extension is imported.
  kernel-bench    one fused guided step (bench/fused_step_speed.py's bench_row) at V = 49,152 and 128,256, B = 1, 16,
                  64, k = 20: torch on the CPU, C++, and on the GPU torch, Triton and CUDA, medians of
                  --repeats; the ratios are torch-on-the-GPU / kernel (> 1: the kernel is faster).
  decode-llama8b  end-to-end decoding latency per generated token (bench/decode_speed.py's decoders): HF
                  `generate`, our plain decoding, Q♯ with a V-type and a Q-type value model (η = 0.1), at
                  Llama-3.1-8B π_ref / Llama-3.2-1B value-model shapes, random weights (nothing is downloaded),
                  bf16, batch 16 then 1, 128 new tokens, k = 20. Each figure is the wall time of one call
                  (prefill included, prompts of 24-40 tokens) / 128, and its ratio to our plain decoding
                  and to HF generate measured in the same process a moment before; then our plain and the
                  V-type decoding with `cuda_graphs=True` (every step after the first replayed as one CUDA
                  graph), with their ratio.
  kernel-tests    `pytest -v tests/kernels tests/engine/test_fixed_shapes.py`: C++, Triton (on CUDA tensors)
                  and CUDA against the torch reference, and CUDA-graph decoding against eager decoding;
                  counts, failed tests, and the test a crash happened in.
  decode-smollm2  as decode-llama8b at SmolLM2-135M's shape, the value models being its first 6 layers.
  csrc-tests      the standalone CMake build of csrc/ for this GPU's architecture and its ctest (the CUDA C++
                  kernel tests); skipped with --cpu-smoke (CI builds and runs it with `make csrc-check`).

Expected on one H200 (torch 2.11, 16 cores): about 5 to 6 minutes: build about 1 min (44 s seen there for
both architectures), kernel-bench under 1 min, decode-llama8b 1.5 to 2.5 min (8 timed calls of 128 steps
of a 32-layer model in eager PyTorch at roughly 25 to 60 ms a step, plus warm-ups and building the models on
the GPU), kernel-tests 1 to 2 min (Triton compiles each kernel variant once), decode-smollm2 under 1 min,
csrc-tests under 1 min. The parts are ordered so that the figures the GPU is needed for come first.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # qsharp_ext from this checkout when it is not installed (the GPU machine)

from qsharp_ext.io import atomic_write_text, markdown_table, write_json  # noqa: E402

TOTAL_BUDGET_S = 480.0  # 8 minutes on one H200, every part included
TAIL_LINES = 40  # output lines kept in the JSON for a part that did not end well


@dataclass(frozen=True)
class Part:
    name: str
    limit_s: float  # on a GPU
    smoke_limit_s: float  # with --cpu-smoke (a shared, slow CPU: generous, never asserted)
    what: str


PARTS = (
    Part("build", 180, 120, "CUDA build of qsharp_ext._C (setup.py), then import it"),
    Part("kernel-bench", 90, 180, "fused guided step: torch vs Triton vs CUDA, V 49,152 and 128,256"),
    Part("decode-llama8b", 210, 240, "decoding latency per token, Llama-3.1-8B π_ref / Llama-3.2-1B value model"),
    Part("kernel-tests", 180, 240, "pytest tests/kernels (C++, Triton and CUDA vs the torch reference)"),
    Part("decode-smollm2", 100, 240, "decoding latency per token, SmolLM2-135M π_ref / its first 6 layers"),
    Part("csrc-tests", 120, 60, "CMake build of csrc/ and ctest (CUDA C++ kernel tests)"),
)
PART_NAMES = tuple(p.name for p in PARTS)

# The decoders of bench/decode_speed.py, under the names used here; our plain decoding runs first so that
# every later row carries its ratio to it.
RUNS = {
    "engine_plain": "plain", "hf_generate": "hf_generate", "qsharp": "guided_vtype", "qsharp_qtype": "guided_qtype",
    "qsharp_shared": "guided_shared_trunk", "engine_plain_graphs": "plain_graphs",
    "qsharp_graphs": "guided_vtype_graphs",
}  # fmt: skip


# ------------------------------------------------------------------------------------------ shapes


def llama_config(**fields):
    from transformers import LlamaConfig

    base = dict(rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=4096)
    return LlamaConfig(**(base | fields))


def decode_shapes(name: str, smoke: bool, ref_layers: int | None) -> dict:
    """π_ref's config and the value model's (a config, or None for π_ref's first `value_layers` layers)."""
    if smoke:  # tiny stand-ins with the same structure: a separate value model, and π_ref's first layers
        if name == "llama8b":
            ref = llama_config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
            value = llama_config(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
            return {"ref": ref, "value": value, "value_layers": None, "shape": "tiny stand-in (CPU smoke)"}
        ref = llama_config(vocab_size=500, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=3, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
        return {"ref": ref, "value": None, "value_layers": 1, "shape": "tiny stand-in (CPU smoke)"}
    if name == "llama8b":
        ref = llama_config(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=ref_layers or 32,
            num_attention_heads=32, num_key_value_heads=8,
        )  # fmt: skip
        value = llama_config(
            vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
            num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
        )  # fmt: skip
        shape = "Llama-3.1-8B π_ref" + (f" cut to {ref_layers} of its 32 layers" if ref_layers else "")
        return {"ref": ref, "value": value, "value_layers": None, "shape": shape + " / Llama-3.2-1B value model"}
    import decode_speed

    return {"ref": decode_speed.smollm2_config(), "value": None, "value_layers": 6,
            "shape": "SmolLM2-135M π_ref / its first 6 layers as value model"}  # fmt: skip


def random_value_model(config, tokenizer, parameterization: str, device: str, dtype: torch.dtype):
    """A value model on a random Llama backbone of `config`'s shape, built on `device` in `dtype`."""
    from transformers import LlamaModel

    from qsharp_ext.value_model import ValueHeadConfig, ValueModel, tokenizer_digest

    head = ValueHeadConfig(parameterization=parameterization, tokenizer_digest=tokenizer_digest(tokenizer))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return ValueModel(LlamaModel(config), head).eval()
    finally:
        torch.set_default_dtype(previous)


def word_prompts(batch: int, vocab: int, seed: int = 0) -> list[str]:
    """`batch` prompts of 24-40 words of the stand-in tokenizer (`w17 w4031 ...`): real ids, left padding."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [24 + 4 * (i % 5) for i in range(batch)]  # unequal: left padding is exercised
    return [" ".join(f"w{t}" for t in torch.randint(vocab - 3, (n,), generator=gen).tolist()) for n in lengths]


# ------------------------------------------------------------------------------------------ report


class Report:
    """gpu_check.json (machine) and gpu_check.md (people), rewritten together after every change."""

    def __init__(self, folder: Path) -> None:
        self.json_path, self.md_path = folder / "gpu_check.json", folder / "gpu_check.md"

    def load(self) -> dict:
        return json.loads(self.json_path.read_text()) if self.json_path.is_file() else {"meta": {}, "parts": {}}

    def update(self, part: str | None = None, **fields) -> None:
        data = self.load()
        if part is None:
            data["meta"].update(fields)
        else:
            data["parts"].setdefault(part, {}).update(fields)
        write_json(self.json_path, data)
        atomic_write_text(self.md_path, render_markdown(data))


def targets(data: dict) -> list[dict]:
    """The issue's GPU targets, judged on what ran (never on --cpu-smoke sizes)."""
    parts, rows = data["parts"], []
    for row in parts.get("decode-llama8b", {}).get("rows", []):
        if row.get("run") == "guided_vtype" and row.get("batch") == 16 and "over_plain" in row:
            value = row["over_plain"]
            rows.append({"target": "guided V-type / plain latency, 8B/1B, batch 16", "value": value,
                         "goal": "<= 1.15", "met": value <= 1.15})  # fmt: skip
        if row.get("run") == "guided_vtype_graphs" and row.get("batch") == 16 and "over_plain_graphs" in row:
            value = row["over_plain_graphs"]
            rows.append({"target": "the same, both as CUDA graphs (cuda_graphs=True)", "value": value,
                         "goal": "<= 1.15", "met": value <= 1.15})  # fmt: skip
    for row in parts.get("kernel-bench", {}).get("rows", []):
        for kernel in ("triton", "cuda"):
            if row.get("V") == 128256 and f"{kernel}_vs_torch" in row:
                value = row[f"{kernel}_vs_torch"]
                rows.append({"target": f"fused step torch / {kernel}, V 128,256, B {row['batch']}", "value": value,
                             "goal": ">= 2", "met": value >= 2})  # fmt: skip
    tests = parts.get("kernel-tests", {})
    if tests.get("status") not in (None, "running", "skipped"):
        result = tests.get("result", {})
        ok = tests["status"] == "ok" and not result.get("failed") and not result.get("errors")
        rows.append({"target": "kernel tests pass, no crash", "value": tests["status"], "goal": "ok", "met": ok})
    return rows


DECODE_LEGEND = (
    "\nms_per_token: the wall time of one call (prefill included) / new tokens; tok_s: batch × new tokens / that "
    "time; over_plain, over_hf: this latency ÷ our plain decoding's, ÷ HF generate's, same batch, same process "
    "(guided V-type target: over_plain ≤ 1.15 at 8B/1B, batch 16).\n"
)
KERNEL_LEGEND = (
    "\ntorch_ms, cpp_ms: the CPU (speedup = torch_ms / cpp_ms); torch_gpu_ms, triton_ms, cuda_ms: the GPU, medians "
    "of the repeats; triton_vs_torch, cuda_vs_torch: torch_gpu_ms ÷ the kernel's (target ≥ 2 at V 128,256).\n"
)


def render_markdown(data: dict) -> str:
    meta, parts = data["meta"], data["parts"]
    smoke = meta.get("size") == "cpu-smoke"
    title = "CPU smoke run (tiny shapes: the script works; nothing is measured)" if smoke else meta.get("gpu")
    lines = [f"# GPU check: {title}\n", f"`{meta.get('command', '')}`\n"]
    versions = ("started", "torch", "cuda", "triton", "transformers")
    lines.append(", ".join(f"{k} {meta[k]}" for k in versions if k in meta) + f"; budget {meta.get('budget_s')} s")
    lines.append(f", whole run {meta['seconds']:.0f} s" if "seconds" in meta else "")
    lines.append("\n\n## Parts\n\n")
    part_rows = [{"part": name, **{k: parts[name].get(k) for k in ("status", "seconds", "limit_s", "what")}}
                 for name in parts]  # fmt: skip
    lines.append(markdown_table(part_rows, ["part", "status", "seconds", "limit_s", "what"]))
    if not smoke and (goal_rows := targets(data)):
        lines.append("\n## Targets\n\n" + markdown_table(goal_rows, ["target", "value", "goal", "met"]))
    for name, part in parts.items():
        lines.append(f"\n## {name}: {part.get('status')}\n\n")
        if part.get("note"):
            lines.append(part["note"] + "\n\n")
        if part.get("result"):
            lines.append(", ".join(f"{k}: {v}" for k, v in part["result"].items()) + "\n\n")
        if part.get("config"):
            lines.append(", ".join(f"{k}: {v}" for k, v in part["config"].items()) + "\n\n")
        if part.get("rows"):
            columns = sorted(dict.fromkeys(k for row in part["rows"] for k in row), key=lambda c: c == "error")
            lines.append(markdown_table(part["rows"], columns))
            if "over_plain" in columns:
                lines.append(DECODE_LEGEND)
            elif "torch_gpu_ms" in columns:
                lines.append(KERNEL_LEGEND)
        if part.get("tail"):
            lines.append("\nLast lines of its output:\n\n```\n" + part["tail"] + "\n```\n")
    return "".join(lines)


# ------------------------------------------------------------------------------------------ parts run in a child


def timed_ms(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def run_kernel_bench(args, report: Report) -> int:
    import fused_step_speed as fused_step_bench  # bench/fused_step_speed.py

    vocabs, batches = ((256,), (1, 4)) if args.cpu_smoke else (fused_step_bench.VOCABS, fused_step_bench.BATCHES)
    repeats = 3 if args.cpu_smoke else args.repeats
    report.update("kernel-bench", config={"k": fused_step_bench.K, "repeats": repeats, "head": "bernoulli, η 0.1"})
    rows = []
    for vocab in vocabs:
        for batch in batches:
            row = fused_step_bench.bench_row(vocab, batch, repeats)
            for kernel in ("triton", "cuda"):
                if f"{kernel}_ms" in row:
                    row[f"{kernel}_vs_torch"] = row["torch_gpu_ms"] / row[f"{kernel}_ms"]
            rows.append(row)
            report.update("kernel-bench", rows=rows)
            print(row, flush=True)
    return 0


def run_decode(args, report: Report, name: str) -> int:
    import decode_speed  # bench/decode_speed.py

    from qsharp_ext import kernels
    from qsharp_ext.value_model import ValueModel, tokenizer_digest

    part = f"decode-{name}"
    device = "cpu" if args.cpu_smoke else "cuda"
    dtype = torch.bfloat16
    new_tokens, warm_tokens = (4, 2) if args.cpu_smoke else (128, 4)
    batches = (2, 1) if args.cpu_smoke else (16, 1)
    top_k, eta = 20, 0.1
    shapes = decode_shapes(name, args.cpu_smoke, args.ref_layers)
    torch.manual_seed(0)

    start = time.perf_counter()
    ref, tokenizer = decode_speed.random_reference(shapes["ref"], device, dtype)
    if shapes["value"] is not None:
        vtype = random_value_model(shapes["value"], tokenizer, "v", device, dtype)
        qtype = random_value_model(shapes["value"], tokenizer, "q", device, dtype)
    else:
        layers = shapes["value_layers"]
        vtype = ValueModel.from_reference(ref, layers, tokenizer).to(device).eval()
        qtype = ValueModel.from_reference(ref, layers, tokenizer, parameterization="q").to(device).eval()
    # a Q-type head on all of π_ref's layers, read from π_ref's own pass (its layers are π_ref's tensors)
    shared = ValueModel.from_reference(ref, 0, tokenizer, parameterization="q", share_trunk=True).to(device).eval()
    build_s = time.perf_counter() - start
    check_start = time.perf_counter()
    tokenizer_digest(tokenizer)  # what every guided call pays to check the value model's tokenizer
    check_ms = (time.perf_counter() - check_start) * 1e3
    count = lambda m: f"{sum(p.numel() for p in m.parameters()) / 1e6:,.1f}M"  # noqa: E731
    try:
        backend = kernels.resolve_backend(torch.device(device))
    except (RuntimeError, ValueError) as err:  # a forced backend that cannot run here: every row will say so
        backend = f"{os.environ.get('QSHARP_EXT_BACKEND')} ({err})"
    report.update(part, config={
        "shape": shapes["shape"], "ref_layers": shapes["ref"].num_hidden_layers, "ref_params": count(ref),
        "vtype_params": count(vtype), "qtype_params": count(qtype), "vocab": shapes["ref"].vocab_size,
        "dtype": str(dtype).removeprefix("torch."), "device": device, "new_tokens": new_tokens, "top_k": top_k,
        "eta": eta, "kernel_backend": backend,
        "models_built_s": round(build_s, 1), "tokenizer_check_ms": round(check_ms, 1),
    })  # fmt: skip

    rows, failed = [], False
    for batch in batches:
        prompts = word_prompts(batch, shapes["ref"].vocab_size)
        decoders = decode_speed.decoding_runs(
            ref, tokenizer, prompts, vtype, qtype, top_k, eta, shared=shared, cuda_graphs=device == "cuda"
        )  # fmt: skip
        base: dict[str, float] = {}  # ms per token of plain, hf_generate and plain_graphs
        for key, label in RUNS.items():
            if key not in decoders:  # the CUDA-graph runs on a GPU only
                continue
            row = {"batch": batch, "run": label}
            try:
                decode = decoders[key]
                decode(warm_tokens)  # first-call work: Triton compilation, cuBLAS handles, allocator
                ms = timed_ms(lambda decode=decode: decode(new_tokens), device) / new_tokens
                row |= {"ms_per_token": ms, "tok_s": batch * 1e3 / ms}
                base |= {label: ms} if label in ("plain", "hf_generate", "plain_graphs") else {}
                for name, column in (("plain", "over_plain"), ("hf_generate", "over_hf")):
                    if name in base:
                        row[column] = ms / base[name]
                if label.endswith("_graphs") and "plain_graphs" in base:
                    row["over_plain_graphs"] = ms / base["plain_graphs"]
            except Exception as err:  # recorded; the other decoders still run
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                failed = True
            rows.append(row)
            report.update(part, rows=rows)
            print(row, flush=True)
        if device == "cuda":
            report.update(part, peak_gpu_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1))
    return 1 if failed else 0


def run_part_in_process(args) -> int:
    sys.path.insert(0, str(ROOT / "bench"))  # decode_speed.py and fused_step_speed.py
    if args.backend:
        os.environ["QSHARP_EXT_BACKEND"] = args.backend
    if args.cpu_smoke:
        torch.set_num_threads(1)
    report = Report(args.results_dir)
    if args.run_part == "kernel-bench":
        return run_kernel_bench(args, report)
    return run_decode(args, report, args.run_part.removeprefix("decode-"))


# ------------------------------------------------------------------------------------------ the driver


def gpu_slug() -> str:
    name = torch.cuda.get_device_name().lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"


def run_command(cmd: list[str], env: dict, deadline: float, log, tail: collections.deque) -> tuple[int | None, str]:
    """Run `cmd` in its own process group until it ends or `deadline`; output goes to stdout, the log and
    `tail`. Returns (return code or None when it ran out of time, its whole output)."""
    print(f"$ {' '.join(cmd)}", flush=True)
    log.write(f"$ {' '.join(cmd)}\n")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        start_new_session=True,
    )  # fmt: skip
    chunks: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
            chunks.append(line)
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        rc = None
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the whole group: ninja's compilers, pytest's children
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
    reader.join(timeout=10)
    return rc, "".join(chunks)


def part_commands(name: str, args, py: str, results_dir: Path) -> tuple[list[list[str]], dict, str | None]:
    """The commands of an external part (build, tests) or the child call of this script, extra environment,
    and a note for the report."""
    if name == "build":
        check = [py, "-c", "from qsharp_ext import _C; print('qsharp_ext._C has_cuda =', _C.has_cuda())"]
        if args.cpu_smoke:
            return [check], {}, "--cpu-smoke compiles nothing: the extension already installed is imported"
        major, minor = torch.cuda.get_device_capability()
        env = {"QSHARP_EXT_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 4), "TORCH_CUDA_ARCH_LIST": f"{major}.{minor}"}
        return [[py, "setup.py", "build_ext", "--inplace"], check], env, f"sm_{major}{minor} only"
    if name == "kernel-tests":
        smoke = ["tests/kernels/test_fused_step.py", "-k", "expand_candidates_equals_reference or bad_shapes"]
        selection = smoke if args.cpu_smoke else ["tests/kernels", "tests/engine/test_fixed_shapes.py"]
        note = "--cpu-smoke runs the candidate expansion and shape-check kernel tests only" if args.cpu_smoke else None
        return [[py, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider", *selection]], {}, note
    if name == "csrc-tests":
        major, minor = torch.cuda.get_device_capability()
        build = str(ROOT / "build-csrc-gpu")
        return [
            ["cmake", "-S", str(ROOT), "-B", build, "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_CUDA_ARCHITECTURES={major}{minor}"],
            ["cmake", "--build", build, "--parallel", str(os.cpu_count() or 4)],
            ["ctest", "--test-dir", build, "--output-on-failure"],
        ], {}, f"sm_{major}{minor} only"  # fmt: skip
    child = [py, str(Path(__file__).resolve()), "--run-part", name, "--results-dir", str(results_dir)]
    child += ["--repeats", str(args.repeats)] + (["--cpu-smoke"] if args.cpu_smoke else [])
    child += ["--backend", args.backend] if args.backend else []
    child += ["--ref-layers", str(args.ref_layers)] if args.ref_layers else []
    return [child], {}, None


def parse_pytest(output: str, rc: int | None) -> dict:
    """Counts from pytest's summary (or its -v lines when it never got there), failed tests, and the test that
    was running when the process died."""
    result: dict = {}
    summary = [line for line in output.splitlines() if re.match(r"^=+ .*\d+ (passed|failed|skipped|error)", line)]
    if summary:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", summary[-1]):
            result["errors" if what.startswith("error") else what] = int(n)
    outcomes = re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", output, re.M)
    if not summary:
        for word in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            result[word.lower()] = sum(1 for _, o in outcomes if o == word)
    result["failed_tests"] = [t for t, o in outcomes if o in ("FAILED", "ERROR")][:50]
    if rc is not None and rc not in (0, 1, 5):  # 1: tests failed, 5: none collected; anything else is a crash
        started = re.findall(r"^(tests/\S+::\S+)(?= |$)", output, re.M)
        finished = {t for t, _ in outcomes}
        result["crashed_in"] = next((t for t in reversed(started) if t not in finished), None)
    return result


def parse_ctest(output: str) -> dict:
    tests = dict(re.findall(r"Test\s+#\d+: (\S+) \.*\s*\**(Passed|Failed|Skipped|Not Run|Exception|Timeout)", output))
    return {"tests": tests, "all_passed": bool(tests) and all(v == "Passed" for v in tests.values())}


def parse_result(name: str, output: str, rc: int | None) -> dict | None:
    if name == "build":
        found = re.search(r"qsharp_ext._C has_cuda = (True|False)", output)
        return {"imports": found is not None, "has_cuda": found is not None and found.group(1) == "True"}
    if name == "kernel-tests":
        return parse_pytest(output, rc)
    if name == "csrc-tests":
        return parse_ctest(output)
    return None


def run_driver(args) -> int:
    started = time.monotonic()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA GPU is visible to torch here; run with --cpu-smoke for the CPU check", file=sys.stderr)
        return 2
    unknown = set(args.parts) - set(PART_NAMES)
    bad_limits = [item for item in args.limit if not re.fullmatch(r"[\w-]+=\d+(\.\d*)?", item)]
    limits = dict(item.split("=") for item in args.limit if item not in bad_limits)
    unknown |= set(limits) - set(PART_NAMES)
    if unknown or bad_limits:
        what = ", ".join(sorted(unknown)) if unknown else ", ".join(bad_limits)
        print(f"unknown part or malformed limit: {what} (parts: {', '.join(PART_NAMES)})", file=sys.stderr)
        return 2
    folder = args.out / ("cpu-smoke" if args.cpu_smoke else gpu_slug())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("gpu_check.json", "gpu_check.md", "gpu_check.log"):
        (folder / stale).unlink(missing_ok=True)
    report = Report(folder)
    py = sys.executable
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    for module in ("transformers", "triton"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    report.update(
        command=" ".join(["bench/gpu_check.py", *sys.argv[1:]]), size="cpu-smoke" if args.cpu_smoke else "gpu",
        gpu=None if args.cpu_smoke else torch.cuda.get_device_name(), cpus=os.cpu_count(), budget_s=args.budget_s,
        started=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **versions,
    )  # fmt: skip
    print(f"writing {folder}/gpu_check.{{json,md,log}}", flush=True)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        "PYTHONUNBUFFERED": "1"}  # fmt: skip
    if args.backend:
        env["QSHARP_EXT_BACKEND"] = args.backend
    bad = []
    with open(folder / "gpu_check.log", "a") as log:
        for part in PARTS:
            if part.name not in args.parts:
                continue
            limit = float(limits.get(part.name, part.smoke_limit_s if args.cpu_smoke else part.limit_s))
            left = args.budget_s - (time.monotonic() - started)
            if part.name == "csrc-tests" and args.cpu_smoke:
                note = "needs nvcc and a GPU; CI builds and runs csrc/ with `make csrc-check`"
                report.update(part.name, status="skipped", what=part.what, note=note)
                continue
            if left < 5:
                report.update(part.name, status="skipped", what=part.what, note="the time budget was spent")
                bad.append(part.name)
                continue
            limit = min(limit, left)
            report.update(part.name, status="running", what=part.what, limit_s=round(limit, 1))
            print(f"\n=== {part.name} (limit {limit:.0f} s) ===", flush=True)
            log.write(f"\n=== {part.name} (limit {limit:.0f} s) ===\n")
            commands, extra_env, note = part_commands(part.name, args, py, folder)
            tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
            part_start = time.monotonic()
            deadline = part_start + limit
            rc, output = 0, ""
            for cmd in commands:
                try:
                    rc, out = run_command(cmd, env | extra_env, deadline, log, tail)
                except OSError as err:  # the program is missing (cmake, a compiler)
                    rc, out = 127, f"{cmd[0]}: {err}\n"
                    tail.append(out.strip())
                output += out
                if rc != 0:
                    break
            status = "ok" if rc == 0 else "timeout" if rc is None else "failed"
            fields = {"status": status, "seconds": round(time.monotonic() - part_start, 1), "returncode": rc}
            if rc is None:
                note = (note + "; " if note else "") + f"stopped at its limit of {limit:.1f} s"
            if note:
                fields["note"] = note
            if (result := parse_result(part.name, output, rc)) is not None:
                fields["result"] = result
            if status != "ok":
                fields["tail"] = "\n".join(tail)
                bad.append(part.name)
            report.update(part.name, **fields)
            print(f"=== {part.name}: {status} in {fields['seconds']} s ===", flush=True)
    report.update(seconds=round(time.monotonic() - started, 1))
    summary = f"{len(args.parts) - len(bad)} of {len(args.parts)} parts ended well"
    print(f"\n{summary}" + (f"; not: {', '.join(bad)}" if bad else "") + f"; see {folder}/gpu_check.md")
    return 1 if bad else 0


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="results go to OUT/<gpu>/ (OUT/cpu-smoke/ with --cpu-smoke)",
    )
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny shapes and a few tokens on the CPU: checks that every part works, measures nothing",
    )
    parser.add_argument(
        "--parts",
        type=lambda s: s.split(","),
        default=",".join(PART_NAMES),
        help="comma-separated parts to run, in the fixed order above",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=TOTAL_BUDGET_S,
        help="seconds for the whole run: a part's limit is cut to what is left, and a part with "
        "under 5 s left is skipped",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="PART=SECONDS",
        help="override one part's time limit (repeatable); GPU limits: "
        + ", ".join(f"{p.name}={p.limit_s:g}" for p in PARTS),
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed fused steps per kernel-bench cell (median)")
    parser.add_argument(
        "--ref-layers",
        type=int,
        default=None,
        help="cut the 8B-shaped π_ref to this many layers; None: all 32 (16 GB of bf16 weights)",
    )
    parser.add_argument(
        "--backend",
        default=None,
        choices=("torch", "triton", "cuda", "cpp"),
        help="force the fused step's kernel backend in the decode parts (QSHARP_EXT_BACKEND); "
        "None: the dispatcher's choice (cuda when built with CUDA, else triton)",
    )
    parser.add_argument(
        "--run-part", choices=("kernel-bench", "decode-llama8b", "decode-smollm2"), help=argparse.SUPPRESS
    )
    parser.add_argument("--results-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_part:
        return run_part_in_process(args)
    return run_driver(args)


if __name__ == "__main__":
    sys.exit(main())

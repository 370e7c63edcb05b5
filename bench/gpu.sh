#!/usr/bin/env bash
# Everything a GPU must show, in one command (about 5-6 minutes on one H200, 8 at most): the CUDA build, the
# fused-step microbenchmark, end-to-end decoding latency at Llama-3.1-8B / 3.2-1B and SmolLM2-135M shapes, the
# kernel tests and the CUDA C++ tests. Results: bench/results/<gpu>/gpu_check.{json,md,log}.
#
#   bench/gpu.sh                  # on a GPU machine, from anywhere in the checkout
#   bench/gpu.sh --out "$OUT"     # through the device tool: $OUT/<gpu>/..., which comes back
#   bench/gpu.sh --cpu-smoke      # tiny shapes on the CPU: bench/results/cpu-smoke/ (the test suite runs this)
#   bench/gpu.sh --help           # parts, time limits, options
#
# The Python is $PYTHON, else python3 when it has torch (on the GPU machine, the image's python3), else the
# checkout's .venv. The checkout's qsharp_ext is imported from source, so nothing needs installing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
has_torch='import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'
if [ -z "${PYTHON:-}" ] && ! python3 -c "$has_torch" 2>/dev/null && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py "$@"

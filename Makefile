# Two entry points for a fresh machine (see README.md): `make demo` and `make test`.
# Both create .venv on first use; later runs reuse it and rebuild the extension when its sources change.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.qsharp-ext-installed
CSRC := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: env demo test csrc-check clean

env: $(STAMP)

$(STAMP): $(CSRC)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the 2.13.0 CPU build that this project's machines have on disk: an open range
	# would download a multi-GB CUDA build. GPU users install their own torch first (see README).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet setuptools wheel ninja "pybind11>=2.12"
	# --no-build-isolation: compile qsharp_ext._C against the torch installed above, not a fresh one.
	# [ray], [accelerate]: Ray core (about 80 MB, seconds to install) and Accelerate, so that the Ray backend's
	# and the data-parallel training's tests run too.
	$(PY) -m pip install --quiet --no-build-isolation -e ".[dev,ray,accelerate]"
	touch $@

# The main job: the star-graph experiment at the quick preset (π_ref pretraining, REINFORCE, DPO, RPO, CD and
# Q♯ on G(2,5)), then the whole Q♯ pipeline on the smoke task and the exact-guidance check; reports in
# runs/stargraph-quick/, runs/smoke/ and runs/demo/.
demo: env
	$(PY) python/stargraph.py --preset quick --degree 2 --path-len 5 --out runs/stargraph-quick
	$(VENV)/bin/qsharp-ext pipeline --config configs/smoke.yaml --out runs/smoke
	$(VENV)/bin/qsharp-ext demo --out runs/demo

test: env
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Standalone CMake build of csrc/: CUDA kernels through nvcc (sm_80, sm_90) and the C++ unit tests.
csrc-check:
	cmake -S . -B build-csrc -DCMAKE_BUILD_TYPE=Release
	cmake --build build-csrc --parallel 2
	ctest --test-dir build-csrc --output-on-failure

clean:
	rm -rf build build-csrc *.egg-info qsharp_ext/_C*.so

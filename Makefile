# `make demo` and `make test` each set up what they need, idempotently: a virtual env, PyTorch's
# CPU build (pip takes the wheel on this machine's disk; TORCH_SPEC overrides it, e.g. for a CUDA
# build on a GPU node), the project and its pinned dependencies.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.gantune-installed
PYTEST_ARGS ?=

.PHONY: install demo test bench bench-search clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and on its own, so nothing later pulls a multi-GB CUDA build
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gantune search spaces/demo.yaml --experiment demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Ratios against baselines timed in the same run (docs/performance.md); each writes
# benchmarks/results.json. bench: data path, E-GAN, Tune overhead (+ GPU packing on a GPU),
# under 15 minutes on 2 cores; bench-search: TPE + ASHA against random search (longer).
bench: $(STAMP)
	$(PY) -m benchmarks.run

bench-search: $(STAMP)
	$(PY) -m benchmarks.run --search

clean:
	rm -rf ray_results mlruns mlartifacts mlflow.db .pytest_cache

# `make demo` and `make test` each set up what they need, idempotently: a virtual env, PyTorch's
# CPU build (pip takes the wheel on this machine's disk; TORCH_SPEC overrides it, e.g. for a CUDA
# build on a GPU node), the project and its pinned dependencies.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.gantune-installed
PYTEST_ARGS ?=

.PHONY: install demo test browser-deps bench bench-search bench-scale gpu-check clean

install: $(STAMP)

# torch first and on its own, so nothing later pulls a multi-GB CUDA build. PYTHONWARNINGS hides
# setuptools' boxed "Editable installation." notice (information only, printed on every install).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gantune search spaces/demo.yaml --experiment demo

# The browser test drives Debian's Chromium through its chromedriver (no browser download);
# apt-get needs root, and runs only when either binary is missing.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "make browser-deps: chromium/chromedriver missing; as root: apt-get install -y chromium chromium-driver" >&2; exit 1; \
	fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

test: $(STAMP) browser-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# Ratios against baselines timed in the same run (docs/performance.md); each writes
# benchmarks/results.json. bench: data path, E-GAN, Tune overhead (+ GPU packing on a GPU),
# under 15 minutes on 2 cores; bench-search: TPE + ASHA against random search (longer).
bench: $(STAMP)
	$(PY) -m benchmarks.run

bench-search: $(STAMP)
	$(PY) -m benchmarks.run --search

# The driver at scale (benchmarks/scale.py): 64, 256 and 1,024 stub trials x 5 folds through the
# real driver, MLflow and Optuna on the PostgreSQL at 127.0.0.1:5432; each trial process takes
# ~330 MB, so SCALE_ARGS="--concurrency 16" on a small machine. Not in `make test`.
SCALE_ARGS ?=
bench-scale: $(STAMP)
	$(PY) -m benchmarks.scale $(SCALE_ARGS)

# On a GPU node with its own PyTorch and nothing installed (see benchmarks/gpu_check.py).
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf ray_results mlruns mlartifacts mlflow.db optuna.db .pytest_cache report synth

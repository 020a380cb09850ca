# mmed-course: every target bootstraps the virtual environment in .venv on first use.
#   make course              run the whole course on the smoke profile (CPU, offline, minutes), then build the book
#   make course PROFILE=colab    ... or another profile (colab, full, or a YAML path)
#   make test                run the test suite (installs Debian's chromium for the browser test when missing)
#   make book                build the Jupyter Book from the latest run (runs the course first if there is none)
#   make lab                 open the notebooks in JupyterLab
#   make bench               print the CPU benchmarks
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= smoke
RUN_DIR ?= runs/$(PROFILE)
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmed-installed
# A CUDA GPU gets Unsloth with its own dependencies (extra "gpu"); without one, Unsloth is installed with
# --no-deps so that pip never replaces the CPU torch with a multi-GB CUDA build.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: course test book browser lab bench lint clean venv sync

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/unsloth-cpu.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mmed-course needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(GPU),1)
	$(BIN)/python -m pip install -e ".[dev,docs,gpu]"
else
	$(BIN)/python -m pip install -e ".[dev,docs]"
	$(BIN)/python -m pip install --no-deps -r requirements/unsloth-cpu.txt
endif
	@touch $@

course: $(STAMP)
	$(BIN)/mmed-course run --profile $(PROFILE) --run-dir $(RUN_DIR)
	$(BIN)/mmed-course book --run-dir $(RUN_DIR)

book: $(STAMP)
	@test -f $(RUN_DIR)/run_summary.json || $(BIN)/mmed-course run --profile $(PROFILE) --run-dir $(RUN_DIR)
	$(BIN)/mmed-course book --run-dir $(RUN_DIR)

# The browser test drives Debian's chromium; install it when missing and we may (root with apt-get).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium not found and cannot be installed here; the browser test will be skipped"; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

sync: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.ipynb

lab: $(STAMP)
	cd notebooks && $(abspath $(BIN))/jupyter lab

bench: $(STAMP)
	$(BIN)/python benchmarks/tiny_model.py
	$(BIN)/python benchmarks/generation_batching.py
	$(BIN)/python benchmarks/ccts_scoring.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/packing.py
	$(BIN)/python benchmarks/manifest_hashing.py
	$(BIN)/python benchmarks/decontamination.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/serve_concurrency.py

lint: $(STAMP)
	$(BIN)/ruff check mmed_helpers tests benchmarks

clean:
	rm -rf runs book/_build .pytest_cache

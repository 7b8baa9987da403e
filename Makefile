# Two commands for a newcomer: `make afd` (the main job on the embedded default) and
# `make test` (the test suite, what CI runs). Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of this version is what these machines have locally; an unpinned torch
# would pull several GB of CUDA packages. GPU users: see README, "Installing on a GPU machine".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install afd demo test test-all bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,wan]"
	touch $(STAMP)

install: $(STAMP)

afd: $(STAMP)
	$(BIN)/afd train --config configs/train/afd-state.yaml

demo: $(STAMP)
	$(BIN)/afd demo --out demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/afd bench world
	$(BIN)/afd bench rollout
	$(BIN)/afd bench train-step
	$(BIN)/afd bench iteration

clean:
	rm -rf $(VENV) demo .pytest_cache

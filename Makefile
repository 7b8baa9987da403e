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

# The suite, then its parity tests (engines against one process) again under the CPU kernels of
# machines without AVX-512 (avx2) and without any vector extension (default): they must hold on any x86 CPU.
# (The avx2 run is skipped where avx2 is already the CPU's best: there the first run was that run.)
# --durations: the suite's budget is 10 minutes on 2 cores, and CI's log names what spends it.
# -n 2: two pytest-xdist workers, one thread each (most tests are single-threaded Python and
# process start-up; two workers use both cores of the machines the budget is set on).
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2
test: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST) -m "not slow" --durations=15
	if [ "$$($(BIN)/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')" != AVX2 ]; then \
	  ATEN_CPU_CAPABILITY=avx2 $(PYTEST) -m "parity and not slow" tests/test_parallel.py; fi
	ATEN_CPU_CAPABILITY=default $(PYTEST) -m "parity and not slow" tests/test_parallel.py

test-all: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST)

bench: $(STAMP)
	$(BIN)/afd bench world
	$(BIN)/afd bench rollout
	$(BIN)/afd bench train-step
	$(BIN)/afd bench iteration

clean:
	rm -rf $(VENV) demo .pytest_cache

# Every target creates the virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install test test-slow bench kernels-check demo train lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,nvrtc]'
	touch $(STAMP)

install: $(STAMP)

# The README's test command; .ci/run calls exactly this.
test: $(STAMP)
	$(BIN)/python tools/kernels_check.py
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	GRADLAB_SLOW=1 $(BIN)/python -m pytest -q -m slow

kernels-check: $(STAMP)
	$(BIN)/python tools/kernels_check.py

# The README's main job: train an MLP on the bundled digits dataset.
demo: $(STAMP)
	$(BIN)/gradlab train

train: demo

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' || echo "torch not installable: benchmarks run without the PyTorch comparison"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

clean:
	rm -rf $(VENV) build dist .pytest_cache .benchmarks

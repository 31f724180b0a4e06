# Quick start: `make demo`, then `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PEER_STAMP := $(VENV)/.installed-peer
DEMO_DATA ?= demo-data

.PHONY: demo test lint bench bench-peer clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	@test -d $(DEMO_DATA) || $(BIN)/tumor-search data synth --out $(DEMO_DATA) --per-class 200 --size 64 --seed 0
	$(BIN)/tumor-search run --config demo --data $(DEMO_DATA) --study demo --storage sqlite:///studies.db

# The tests also cover the gp sampler, so they install its extra (PyTorch, SciPy).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,gp]'
	@touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Our search against KerasTuner's Hyperband, same space, data and wall-clock budget (about
# 2 x budget x seeds: 30 min with the defaults --budget 300 --seeds 3).
$(PEER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[peer]'
	@touch $(PEER_STAMP)

bench-peer: $(PEER_STAMP)
	$(BIN)/python bench/peer_kerastuner.py $(BENCH_PEER_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check search models data common tests bench

clean:
	rm -rf $(DEMO_DATA) studies.db .pytest_cache

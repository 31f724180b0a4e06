# Quick start: `make demo`, then `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PEER_STAMP := $(VENV)/.installed-peer
DEMO_DATA ?= demo-data

.PHONY: demo test test-all test-min lint bench bench-peer bench-real gpu-wheels clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	@test -d $(DEMO_DATA) || $(BIN)/tumor-search data synth --out $(DEMO_DATA) --per-class 200 --size 64 --seed 0
	$(BIN)/tumor-search run --config demo --data $(DEMO_DATA) --study demo --storage sqlite:///studies.db

# The tests also cover the gp sampler (PyTorch, SciPy) and the JAX and PyTorch backends.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,gp,jax]'
	@touch $(TEST_STAMP)

# Two tiers. `make test`: the TensorFlow suite without the tests marked `slow` (real
# outages, Slurm, the GPU dry run, clean venvs, other backends in subprocesses): what a
# newcomer runs, under 10 minutes on 2 cores. `make test-all` (CI): every test on
# TensorFlow, then the tests marked `backends` (every backbone builds, a study prunes, the
# feature cache, train-best, predict, ...) on JAX and on PyTorch. Both print the 20 slowest
# tests; pytest-randomly shuffles the order (its seed is printed: --randomly-seed N replays
# one, -p no:randomly keeps the file order). pytest-xdist runs them in two to four processes,
# sleep-bound tests beside CPU-bound ones (`make test`: 5.6 min with two on 2 cores, about
# 10 in one).
PYTEST := $(BIN)/python -m pytest --durations=20 -n auto --maxprocesses=4
# JAX keeps its compiled steps here between runs (git-ignored).
JAX_TEST_CACHE := $(CURDIR)/.cache/jax-tests

test: $(TEST_STAMP)
	$(PYTEST) -m "not slow"

test-all: $(TEST_STAMP)
	$(MAKE) lint
	$(MAKE) test-min
	$(PYTEST)
	KERAS_BACKEND=jax JAX_COMPILATION_CACHE_DIR=$(JAX_TEST_CACHE) $(PYTEST) -m backends -p no:cacheprovider
	KERAS_BACKEND=torch $(PYTEST) -m backends -p no:cacheprovider

# The declared floors of every direct dependency (pyproject.toml), installed together by uv's
# lowest-direct resolution into .venv-min, under a smoke subset of the suite: a floor that
# cannot be installed or that the code outgrew (numpy.bitwise_count needs numpy 2) fails here.
MIN_VENV := .venv-min
MIN_SMOKE := tests/data tests/models/test_registry.py tests/search/test_space.py \
	tests/search/test_fold_features.py tests/search/test_feature_cache.py tests/search/test_end_to_end.py \
	tests/search/test_dashboard_guard.py tests/search/test_artifacts.py
test-min: $(STAMP)
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	rm -rf $(MIN_VENV)  # uv would keep newer versions already there: the floors, every time
	$(BIN)/uv venv --quiet --python $(PYTHON) $(MIN_VENV)
	VIRTUAL_ENV=$(CURDIR)/$(MIN_VENV) $(BIN)/uv pip install --quiet --resolution lowest-direct -e '.[test]'
	$(MIN_VENV)/bin/python -m pytest -p no:randomly -m "not slow" $(MIN_SMOKE)

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Our search against KerasTuner's Hyperband, same space, data and wall-clock budget (about
# 2 x budget x seeds: 30 min with the defaults --budget 300 --seeds 3).
$(PEER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[peer]'
	@touch $(PEER_STAMP)

# The whole user path on a real dataset folder (README "Real MRI"): make bench-real DATA=DIR
bench-real: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make bench-real DATA=/path/to/dataset [BENCH_REAL_ARGS=...]" >&2; exit 2; }
	$(BIN)/python bench/real.py --data "$(DATA)" $(BENCH_REAL_ARGS)

bench-peer: $(PEER_STAMP)
	$(BIN)/python bench/peer_kerastuner.py $(BENCH_PEER_ARGS)

# The wheels bench/gpu/check carries to the GPU machine (Python 3.12, no network) into .whl/:
# pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_*
# of bench/gpu/wheels.txt, other versions removed (bench/gpu/README.md).
gpu-wheels: $(STAMP)
	$(BIN)/python -m bench.gpu.wheels download

# ruff, then the import contracts of .importlinter (layers, no cycles).
lint: $(TEST_STAMP)
	$(BIN)/ruff check search models data common tests bench predictor
	$(BIN)/lint-imports

clean:
	rm -rf $(DEMO_DATA) studies.db .pytest_cache

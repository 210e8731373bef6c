# The documented entry points: `make demo`, `make test`, `make airflow`, `make lint`, `make bench`, `make story`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test airflow lint bench bench-incremental story venv clean dist

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 (or run make PYTHON=/path/to/python3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel

# Reinstall when the package metadata or the C extension changes.
$(STAMP): setup.py $(wildcard pipelines/core/*.c) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/predcache demo

airflow: $(STAMP)
	$(BIN)/predcache airflow

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipelines tests dags benchmarks
	$(BIN)/ruff format --check pipelines tests dags benchmarks
	$(BIN)/mypy pipelines tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Incremental refresh vs full rescoring at 10M rows on both engines (BENCH_ROWS to change).
bench-incremental: $(STAMP)
	$(BIN)/python -m benchmarks.incremental

# The wheel (with sql/, the bundled models and dags/ inside) and the sdist, into dist/.
dist: $(STAMP)
	rm -rf build dist
	$(BIN)/python -m pip wheel --no-deps --quiet --wheel-dir dist .
	$(BIN)/python setup.py --quiet sdist --dist-dir dist

# July-December 2013 on the reference model: backfill, real outcomes, weekly AUC and drift,
# a week in Celsius and its alerts, the HTML report (about an hour on 2 cores).
STORY_DIR ?= story
story: $(STAMP)
	$(BIN)/python -m pipelines.monitoring.story --data-dir $(STORY_DIR)/data --out $(STORY_DIR)/out

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The documented entry points: `make demo`, `make test`, `make lint`, `make bench`, `make story`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench story venv clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 (or run make PYTHON=/path/to/python3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel

# Reinstall when the package metadata changes.
$(STAMP): setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/predcache demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipelines tests dags benchmarks
	$(BIN)/ruff format --check pipelines tests dags benchmarks
	$(BIN)/mypy pipelines

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# July-December 2013 on the reference model: backfill, real outcomes, weekly AUC and drift,
# a week in Celsius and its alerts, the HTML report (about an hour on 2 cores).
STORY_DIR ?= story
story: $(STAMP)
	$(BIN)/python -m pipelines.monitoring.story --data-dir $(STORY_DIR)/data --out $(STORY_DIR)/out

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

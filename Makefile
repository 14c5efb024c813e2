# Each target is one line of intent; CI calls the same targets a person does.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ENV_MANAGER ?= uv
# The same build tools as python_env.yaml's build_dependencies (tests check they agree).
BUILD_DEPS := pip==26.3 setuptools==84.2.1 wheel==0.48.0

.DEFAULT_GOAL := help
.PHONY: help venv lock test test-fast lint format pipeline benchmark ui clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(VENV)/.installed  ## create .venv from requirements.lock (Python 3.11.7)

$(VENV)/.installed: requirements.lock python_env.yaml plugin/pyproject.toml plugin/nyc_taxi_duration_defaults.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(BUILD_DEPS)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation ./plugin
	touch $@

lock: venv  ## re-resolve requirements.in to the newest versions that work together
	$(BIN)/uv pip compile requirements.in --universal --python-version 3.11 --upgrade \
		--custom-compile-command "make lock" -o requirements.lock

test: venv  ## run every test, slow ones included (needs ../shared/data/tlc)
	$(BIN)/pytest

test-fast: venv  ## unit tests only
	$(BIN)/pytest -m "not slow and not envmanager"

lint: venv  ## ruff lint and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: venv  ## ruff format and autofix
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# MLflow finds `uv` (and the steps find `python`) on PATH: put .venv/bin first.
pipeline: venv  ## the whole pipeline (main) on the default months, downloaded from the TLC; SQLite tracking
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . --env-manager $(ENV_MANAGER)

benchmark: venv  ## featurization and tracking-overhead benchmark (table + benchmarks/results/*.json)
	$(BIN)/python scripts/benchmark.py

ui: venv  ## open the MLflow UI on the default SQLite store at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean:  ## remove the local tracking store and artifacts (not the data, not .venv)
	rm -rf mlflow.db mlruns mlartifacts

# Each target is one line of intent; CI calls the same targets a person does.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ENV_MANAGER ?= uv
# The same build tools as python_env.yaml's build_dependencies (tests check they agree).
BUILD_DEPS := pip==26.3 setuptools==84.2.1 wheel==0.48.0

.DEFAULT_GOAL := help
.PHONY: help venv lock test test-fast lint format pipeline benchmark benchmark-preprocess \
	benchmark-score benchmark-search benchmark-search-quick benchmark-spark-search ui clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(VENV)/.installed  ## create .venv from requirements-dev.lock (runtime + dev tools, Python 3.11.7)

$(VENV)/.installed: requirements-dev.lock python_env.yaml plugin/pyproject.toml plugin/nyc_taxi_duration_defaults.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(BUILD_DEPS)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation ./plugin
	touch $@

# The dev lock is resolved first (newest versions that work with the dev tools too); the runtime
# lock, what `mlflow run` installs, is then pinned to the same versions.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock"
lock: venv  ## re-resolve both locks (runtime requirements.lock, dev requirements-dev.lock) to the newest versions
	$(BIN)/uv pip compile requirements-dev.in $(LOCK_FLAGS) --upgrade -o requirements-dev.lock
	$(BIN)/uv pip compile requirements.in -c requirements-dev.lock $(LOCK_FLAGS) -o requirements.lock

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
	$(BIN)/python scripts/benchmark.py featurize

benchmark-preprocess: venv  ## preprocess end to end vs the textbook script, 3M and 6M rows (minutes; run alone)
	$(BIN)/python scripts/benchmark.py preprocess

benchmark-score: venv  ## batch scoring rows/s: Spark against pandas on the 2023 months
	$(BIN)/python scripts/benchmark.py score

benchmark-search: venv  ## the XGBoost search pruned vs prune=false, 2021-01/02, full budget (slow; run alone)
	$(BIN)/python scripts/benchmark.py search

benchmark-search-quick: venv  ## the same on the 2023 months, 12 trials of up to 200 rounds
	$(BIN)/python scripts/benchmark.py search --train-month 2023-01 --val-month 2023-02 \
		--test-month 2023-03 --max-evals 12 --num-boost-round 200

benchmark-spark-search: venv  ## the search in process against the same search on Spark local[N]
	$(BIN)/python scripts/benchmark.py spark-search

ui: venv  ## the MLflow UI on ./mlflow.db at http://127.0.0.1:5000; prints the link to the training runs
	$(BIN)/python scripts/ui.py

clean:  ## remove the local tracking store and artifacts (not the data, not .venv)
	rm -rf mlflow.db mlruns mlartifacts

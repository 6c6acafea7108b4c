# mlcanary: two commands from a fresh clone — `make demo` and `make test`.
# Each bootstraps .venv from requirements.lock when it is missing or stale (installing uv from PyPI
# into .tools/ if uv is not on PATH). `make help` lists every target.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# Never let uv download a Python build: only registries are reachable from CI.
export UV_PYTHON_DOWNLOADS := never
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: help demo platform test test-slow test-fast lint format lock bootstrap clean bench bench-model-server bench-cli bench-judge bench-quick bench-log bench-soak

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.tools/bin/uv:
	@echo "uv not found: installing it from PyPI into .tools/"
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

$(STAMP): requirements.lock pyproject.toml | $(UV)
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 is required (python3.11 not found)"; exit 1; }
	$(UV) venv --quiet --seed --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

bootstrap: $(STAMP) ## Create .venv from requirements.lock (done by every target that needs it)

demo: $(STAMP) ## The whole story locally on embedded defaults (state in .mlcanary/demo)
	$(BIN)/mlcanary demo

platform: $(STAMP) ## MLflow + Prefect servers, worker, webhook receiver, stack (profile demo; UIs :5000, :4200)
	$(BIN)/mlcanary --profile demo up --platform

# Test files run in parallel, one file per worker at a time (module fixtures such as a running stack
# are set up once); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto

test: $(STAMP) ## The test suites (unit, flows, integration with real processes), within 15 min on 2 cores
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not long" --durations=30

test-long: $(STAMP) ## The long runs CI adds: the demo end to end, the platform, a crash at every step, Prefect on PostgreSQL, the model-server smoke beside KServe
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m long --durations=15

test-fast: $(STAMP) ## Unit tests only
	$(BIN)/pytest -m "not integration and not flows and not slow"

# `make bench` fits in 10 minutes on 2 cores: the model-server benchmark at full size, the stack's
# serving benchmark in its quick form, the judge with fewer simulated releases per cell than the
# published tables (`make bench-judge` runs those sizes, about half an hour), and the inference log
# at 300k rows (`make bench-log` runs larger windows).
bench: $(STAMP) ## Every benchmark in ≤ 10 min: model server vs KServe, Envoy, CLI, the stack, the judge (fewer runs), the inference log; rewrites docs/benchmarks.md
	$(BIN)/python -m benchmarks.model_server --out docs/benchmarks.md
	$(BIN)/python -m benchmarks.serving --quick --out docs/benchmarks.md --wait-idle 30 --pin-candidate
	$(BIN)/python -m benchmarks.judge --runs 12 --good-runs 6 --aa-runs 24 --out docs/benchmarks.md
	$(BIN)/python -m benchmarks.judge --only shadow --runs 8 --out docs/benchmarks.md
	$(BIN)/python -m benchmarks.inference_log --out docs/benchmarks.md

bench-log: $(STAMP) ## The monitor's tick (a 48 h window beside a 10k-request one at the same rate) and the collector's ingest, SQLite and PostgreSQL (ROWS=1000000; the goal's size is 10000000)
	$(BIN)/python -m benchmarks.inference_log --rows $(or $(ROWS),1000000) --out docs/benchmarks.md

bench-model-server: $(STAMP) ## Our model server beside KServe's, our Envoy beside a minimal one, CLI times (~3 min); rewrites its block of docs/benchmarks.md
	$(BIN)/python -m benchmarks.model_server --out docs/benchmarks.md

bench-cli: $(STAMP) ## The CLI's answer times alone (--help of every command, status; ~1 min); rewrites its block of docs/benchmarks.md
	$(BIN)/python -m benchmarks.model_server --only cli --out docs/benchmarks.md

bench-judge: $(STAMP) ## The judge at the published sizes vs Flagger/Kayenta-style rules, and its shadow phase (~30 min); rewrites their blocks of docs/benchmarks.md
	$(BIN)/python -m benchmarks.judge --out docs/benchmarks.md
	$(BIN)/python -m benchmarks.judge --only shadow --runs 40 --out docs/benchmarks.md

bench-soak: $(STAMP) ## The local stack soaked through a release: 20 req/s for 10 min, steps and a rollback, every count reconciled, memory sampled (~13 min); rewrites its block of docs/benchmarks.md
	$(BIN)/python -m benchmarks.soak --rate $(or $(RATE),20) --minutes $(or $(MINUTES),10) --out docs/benchmarks.md

bench-quick: $(STAMP) ## Quick serving benchmark (~2 min); prints the report, changes no file
	$(BIN)/python -m benchmarks.serving --quick

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: | $(UV) ## Re-resolve requirements.lock from pyproject.toml (names and versions only)
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --no-annotate --no-header -o requirements.lock

clean: ## Remove local state (.mlcanary/) and caches; keeps .venv
	rm -rf .mlcanary .pytest_cache .ruff_cache

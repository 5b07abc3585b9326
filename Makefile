# One-command entry points. Every target sets itself up first (creates .venv and installs the
# pinned stack on a fresh machine); the stamp file makes the set-up a no-op when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= $(shell nproc 2>/dev/null || echo 2)
SNAKEMAKE := $(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db

.PHONY: setup reproduce test lint dry-run ui clean-results

setup: $(STAMP)

# pip, never uv: uv ignores this machine's pip configuration (cap and local wheel index).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

reproduce: $(STAMP)
	$(SNAKEMAKE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/snakemake --lint

dry-run: $(STAMP)
	$(SNAKEMAKE) --dry-run

# The MLflow UI over the project's store (every run, parameter, metric curve and artifact), bound
# to this machine only. `make ui PORT=5001` picks another port; Ctrl-C stops it. The artifacts
# of runs logged by vtdl live in ./mlartifacts (next to mlflow.db); the root below only applies
# to experiments created from the UI. MLflow's background job runner (GenAI features, five
# extra processes) is off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise.
PORT ?= 5000
ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:$(PORT)  (store: $(MLFLOW_TRACKING_URI); Ctrl-C to stop)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	$(BIN)/mlflow server --backend-store-uri '$(MLFLOW_TRACKING_URI)' \
		--default-artifact-root ./mlartifacts --host 127.0.0.1 --port $(PORT) --workers 1

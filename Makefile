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

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

.PHONY: setup reproduce report faults bench docs test lint dry-run ui dvc-repro push pull

setup: $(STAMP)

# pip, never uv: uv ignores this machine's pip configuration (cap and local wheel index).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# Extra Snakemake options: make reproduce ARGS="--configfile params.yaml workflow/presets/ucf101.yaml"
ARGS ?=
# One run per folder: a second one is refused at once, and the Snakemake lock a killed run
# left is removed when no Snakemake runs here (src/vtdl/snakelock.py), so re-running after a
# crash or a kill just works. With nothing changed since Snakemake last found nothing to do, it
# answers without starting Snakemake (src/vtdl/uptodate.py).
reproduce: $(STAMP)
	$(BIN)/python -m vtdl.snakelock $(SNAKEMAKE) $(ARGS)

# Snakemake's self-contained HTML report of the finished pipeline: tables, figures, captions,
# the job graph and run times (run `make reproduce` first).
report: $(STAMP)
	$(SNAKEMAKE) --report results/report.html $(ARGS)

# The fault-injection suite alone (it is also part of `make test`), writing the table the README
# shows: bench/faults/summary.{md,json}.
faults: $(STAMP)
	VTDL_FAULTS_SUMMARY=bench/faults $(BIN)/python -m pytest -q tests/faults

# Speed and memory figures measured side by side on this machine (bench/run.py): writes
# bench/results.{json,md}, the table the README shows. Extra options: ARGS="--only ...".
bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

# docs/configuration.md from the params schema and the shipped params.yaml.
docs: $(STAMP)
	$(BIN)/python -c "from vtdl.config import configuration_reference as ref, load_yaml; \
	print(ref(load_yaml('params.yaml')), end='')" > docs/configuration.md

# Two pytest workers: many tests wait on servers, apt or subprocess start-up, so two overlap
# well even on two cores. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/snakemake --lint

dry-run: $(STAMP)
	$(SNAKEMAKE) --dry-run $(ARGS)

# The MLflow UI over the project's store (every run, parameter, metric curve and artifact), bound
# to this machine only. `make ui PORT=5001` picks another port; Ctrl-C stops it. The artifacts
# of runs logged by vtdl live in ./mlartifacts (next to mlflow.db); the root below only applies
# to experiments created from the UI. MLflow's background job runner (GenAI features, five
# extra processes) is off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise.
PORT ?= 5000
ui: $(STAMP)
	@echo "MLflow UI: $$($(BIN)/python -c 'import sys; from vtdl.tracking import ui_url; print(ui_url(sys.argv[1]))' http://127.0.0.1:$(PORT))  (store: $(MLFLOW_TRACKING_URI); Ctrl-C to stop)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	MLFLOW_DISABLE_TELEMETRY=$${MLFLOW_DISABLE_TELEMETRY:-true} \
	$(BIN)/mlflow server --backend-store-uri '$(MLFLOW_TRACKING_URI)' \
		--default-artifact-root ./mlartifacts --host 127.0.0.1 --port $(PORT) --workers 1

# DVC: versioned data, checkpoints, results and MLflow store (dvc.yaml; remote in .dvc/config,
# by default ../vtdl-dvc-remote). Stage commands run the venv's snakemake and python.
DVC := PATH="$(abspath $(BIN)):$$PATH" SNAKEMAKE_ARGS="--cores $(CORES)" $(BIN)/dvc
DVCSYNC := PATH="$(abspath $(BIN)):$$PATH" SNAKEMAKE_ARGS="--cores $(CORES)" $(BIN)/python -m vtdl.dvcsync

# The pipeline through DVC: the same Snakemake jobs as `make reproduce`, hashes into dvc.lock.
dvc-repro: $(STAMP)
	$(DVC) repro

# Record the outputs in dvc.lock (dvc repro: no job runs after `make reproduce`), upload them;
# then commit dvc.lock. `make push REMOTE=name` picks another remote.
push: $(STAMP)
	$(DVCSYNC) push $(if $(REMOTE),--remote $(REMOTE))

# What dvc.lock pins, from the remote, marked up to date for Snakemake (no job re-runs).
# Refuses to overwrite tracked outputs changed here; `make pull FORCE=1` discards them.
pull: $(STAMP)
	$(DVCSYNC) pull $(if $(FORCE),--force) $(if $(REMOTE),--remote $(REMOTE))

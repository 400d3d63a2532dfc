# receipt-llava: `make run` (set up + whole pipeline on the embedded default), `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SOURCE ?=
# Test files run on this many pytest-xdist workers (a file stays on one: its fixtures are shared).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# Stage commands in dvc.yaml call `python`: make it the project's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup run data ocr-cache pretrain repro recipe promote retrain score serve bench test test-fast lint clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the CPU wheel here (a GPU image installs the CUDA build of the same release)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## create .venv with the pinned stack

data: setup ## refresh data/ from SOURCE (default: params.yaml data.source) and `dvc add` it
	$(PY) -m tasks.refresh_data $(if $(SOURCE),--source '$(SOURCE)')

run: setup ## run the whole pipeline on the embedded default (creates data/ if missing)
	@if [ ! -d data ]; then \
	  if [ -f data.dvc ] && dvc pull --quiet data.dvc 2>/dev/null; then echo "data: pulled from the DVC remote"; \
	  else $(MAKE) --no-print-directory data; fi; \
	fi
	dvc repro
	@$(PY) -m tasks.summary
	-@$(PY) -m tasks.promote   # a refusal (no better than the champion) is reported, not an error

ocr-cache: setup ## re-make assets/cord/ocr.jsonl.gz: OCR of every image in data/ (~8 min for CORD on 2 cores)
	$(PY) -m tasks.inference.ocr

pretrain: setup ## re-make models/tiny-reader: the embedded base learns to read, then to copy and label (67 min on 2 AVX512 cores; see docs/benchmarks.md: its last run did not match the shipped base)
	$(PY) -m tasks.reader.pretrain

repro: setup ## dvc repro (train .. register) on the current data/
	dvc repro

recipe: setup ## configs/$(RECIPE).yaml as one DVC experiment (GPU; HF_HUB_OFFLINE=0 to download)
	@test -n "$(RECIPE)" || { echo "RECIPE=<name of a configs/*.yaml>"; exit 2; }
	$(PY) -m tasks.recipe configs/$(RECIPE).yaml

promote: setup ## move the `champion` alias to the challenger (VERSION=N to pick one)
	$(PY) -m tasks.promote $(if $(VERSION),--version $(VERSION))

retrain: setup ## the Prefect retrain flow: refresh data, every stage, push, register, promote
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 $(PY) -m flows.retrain $(if $(SOURCE),--source '$(SOURCE)')

score: setup ## score a folder of receipts with the champion: DIR=<folder> [VERSION=N] [JSON_SCHEMA=0|1] [FORCE=1] -> reports/score/
	@test -n "$(DIR)" || { echo "DIR=<folder of receipt images>"; exit 2; }
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 $(PY) -m flows.score --dir '$(DIR)' $(if $(VERSION),--version $(VERSION)) $(if $(filter 0,$(JSON_SCHEMA)),--no-json-schema,$(if $(JSON_SCHEMA),--json-schema)) $(if $(FORCE),--force)

serve: setup ## serve the champion over HTTP (MLflow's scoring protocol) on PORT (default 5001)
	$(PY) -m tasks.serve --port $(or $(PORT),5001)

bench: setup ## CPU benchmark of the pipeline; rewrites its section of docs/benchmarks.md
	$(PY) -m bench.cpu

test: setup ## all tests, end-to-end ones included (what CI runs)
	$(PY) -m pytest -q $(XDIST)

test-fast: setup ## tests without the slow end-to-end ones
	$(PY) -m pytest -q $(XDIST) -m "not slow"

lint: setup ## ruff (lint + format check), mypy, and the layer contracts (import-linter)
	$(VENV)/bin/ruff check tasks flows tests bench devtools
	$(VENV)/bin/ruff format --check tasks flows tests bench devtools
	$(VENV)/bin/mypy tasks flows bench tests devtools
	$(VENV)/bin/lint-imports

clean: ## remove pipeline outputs (keeps data/ and .venv)
	rm -rf artifacts reports/data_docs reports/*.json reports/*.jsonl reports/*.csv

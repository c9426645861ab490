# alexnet-search: every target creates its environment from pyproject.toml if needed.
#   make search [CONFIG=tuning/cpu.toml] [STUDY=name] [DATA_DIR=path] [WORKERS=N or auto] [BACKEND=jax]
#               [SEED=2 (a second study seed)] [ITERATIONS=N or MAX_TRIALS=N (extend a study)]
#   make retrain-best [CONFIG=...] [STUDY=...] [SEEDS=3] [FROM=study or hyperparameters.json]
#                     [POOL="study2 study3" (the best confirmed finalist of this study and those)]
#                     [WORKERS=N (the seeds side by side)]
#   make baseline [CONFIG=...] [STUDY=...] [SEEDS=3] [BASELINE=name] [WORKERS=N]
#   make report [CONFIG=...] [STUDY=...] [AGAINST="study2 study3" (other seeds or tuners)]
#   make plan [CONFIG=...] [WORKERS=N or auto (estimated side by side)] | make bench | make tensorboard | make test
# BACKEND (Keras' backend: tensorflow, the default, or jax) picks the environment: .venv for
# TensorFlow, .venv-jax for JAX (no TensorFlow in it). make test runs the suite in both.

PYTHON ?= python3
BACKEND ?= tensorflow
# Empty: the CLI picks tuning/paper.toml where the backend sees a GPU, else tuning/cpu.toml, and says so.
CONFIG ?=
STUDY ?=
DATA_DIR ?=
SEEDS ?= 1
FROM ?=
POOL ?=
BASELINE ?=
SEED ?=
ITERATIONS ?=
MAX_TRIALS ?=
AGAINST ?=
WORKERS ?=
PORT ?= 6006
comma := ,
GPU := $(if $(shell command -v nvidia-smi 2>/dev/null),yes)

ifeq ($(filter $(BACKEND),tensorflow jax),)
$(error BACKEND=$(BACKEND): use tensorflow or jax)
endif

# The TensorFlow environment carries JAX's CPU build too, for the test that loads a .keras file
# exported on one backend into the other.
TF_VENV := .venv
TF_EXTRAS := dev,tensorflow,jax$(if $(GPU),$(comma)cuda)
JAX_VENV := .venv-jax
JAX_EXTRAS := dev,jax$(if $(GPU),$(comma)jax-cuda)
TF_STAMP := $(TF_VENV)/.installed-$(subst $(comma),-,$(TF_EXTRAS))
JAX_STAMP := $(JAX_VENV)/.installed-$(subst $(comma),-,$(JAX_EXTRAS))

VENV := $(if $(filter jax,$(BACKEND)),$(JAX_VENV),$(TF_VENV))
STAMP := $(if $(filter jax,$(BACKEND)),$(JAX_STAMP),$(TF_STAMP))
RUN := KERAS_BACKEND=$(BACKEND) $(VENV)/bin/alexnet-search
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG))
STUDY_ARGS := $(CONFIG_ARG) $(if $(STUDY),--study $(STUDY)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
SEED_ARG := $(if $(SEED),--seed $(SEED))
BUDGET_ARGS := $(if $(ITERATIONS),--hyperband-iterations $(ITERATIONS)) $(if $(MAX_TRIALS),--max-trials $(MAX_TRIALS))
WORKERS_ARG := $(if $(WORKERS),--workers $(WORKERS))

.PHONY: env search retrain-best baseline report plan bench tensorboard test test-fast clean-env

env: $(STAMP)

# $(1) venv, $(2) extras
define make_env
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -e '.[$(2)]'
	@rm -f $(1)/.installed-*
	@touch $@
endef

$(TF_STAMP): pyproject.toml
	$(call make_env,$(TF_VENV),$(TF_EXTRAS))

$(JAX_STAMP): pyproject.toml
	$(call make_env,$(JAX_VENV),$(JAX_EXTRAS))

search: $(STAMP)
	$(RUN) search $(STUDY_ARGS) $(SEED_ARG) $(BUDGET_ARGS) $(WORKERS_ARG)

retrain-best: $(STAMP)
	$(RUN) retrain-best $(STUDY_ARGS) $(SEED_ARG) --seeds $(SEEDS) $(if $(FROM),--from $(FROM)) $(foreach s,$(POOL),--pool $(s)) $(WORKERS_ARG)

baseline: $(STAMP)
	$(RUN) baseline $(STUDY_ARGS) $(SEED_ARG) --seeds $(SEEDS) $(if $(BASELINE),--name $(BASELINE)) $(WORKERS_ARG)

report: $(STAMP)
	$(RUN) report $(CONFIG_ARG) $(if $(STUDY),--study $(STUDY)) $(foreach s,$(AGAINST),--against $(s))

plan: $(STAMP)
	$(RUN) plan $(CONFIG_ARG) $(BUDGET_ARGS) $(WORKERS_ARG)

# BENCH_ARGS, e.g. "--images 10000" for the memory comparison at the seed's scale.
bench: $(STAMP)
	$(RUN) bench $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(BENCH_ARGS)

tensorboard: $(STAMP)
	$(RUN) tensorboard --port $(PORT)

# Every test on TensorFlow; then the end-to-end study, retrain, exports and HParams on JAX, in an
# environment where TensorFlow is not installed at all, so a stray import fails the suite.
# Both cores (pytest-xdist); tests sharing a finished study stay on one worker (tests/conftest.py).
# The `alone` tests (three network namespaces: a 45 s lease against a 30 s partition) then run by
# themselves: a neighbour's load would stretch their clocks, and their 3-minute budget is theirs.
PYTEST := python -m pytest -n 2 --dist loadgroup

test: $(TF_STAMP) $(JAX_STAMP)
	KERAS_BACKEND=tensorflow $(TF_VENV)/bin/$(PYTEST) -m "not alone"
	KERAS_BACKEND=tensorflow $(TF_VENV)/bin/python -m pytest -m alone
	KERAS_BACKEND=jax $(JAX_VENV)/bin/$(PYTEST) -m backends

test-fast: $(TF_STAMP)
	KERAS_BACKEND=tensorflow $(TF_VENV)/bin/$(PYTEST) -m "not slow"

clean-env:
	rm -rf $(TF_VENV) $(JAX_VENV)

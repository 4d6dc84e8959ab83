# `make train` / `make test` work on a fresh clone: they create .venv and install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
OPTUNA_SWEEPER := 1.3.0

.PHONY: train test lint bench dashboard mutate clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# second, without its dependencies: the released Optuna sweeper declares optuna<3 but runs
	@# on the Optuna 4 installed above (pyproject.toml explains; pip warns about the pin)
	$(PY) -m pip install -q --no-deps 'hydra-optuna-sweeper==$(OPTUNA_SWEEPER)'
	touch $(STAMP)

train: $(STAMP)  ## the default job: speech enhancement on the embedded dataset
	$(PY) -m trainer $(ARGS)

test: $(STAMP)  ## the test suite, on CPU, one pytest-xdist worker per core (at most 4), longest tests first
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist worksteal $(ARGS)

lint: $(STAMP)  ## ruff: the checks of pyproject.toml [tool.ruff] and the formatting, changing nothing
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

dashboard: $(STAMP)  ## optuna-dashboard on the studies (STORAGE=<url>, default outputs/optuna.db; PORT=8080)
	$(PY) -m sweeps.dashboard $(STORAGE) --port $(or $(PORT),8080)

mutate: $(STAMP)  ## mutation testing of the numerical core (cosmic-ray; tens of minutes; not part of make test)
	$(PY) -m pip install -q -e '.[mutation]'
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m tests.mutation $(ARGS) --json mutation.json

bench: $(STAMP)  ## engine overhead and data throughput
	$(PY) -m benchmarks.engine

clean-venv:
	rm -rf $(VENV)

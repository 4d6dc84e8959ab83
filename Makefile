# `make train` / `make test` work on a fresh clone: they create .venv and install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: train test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

train: $(STAMP)  ## the default job: speech enhancement on the embedded dataset
	$(PY) -m trainer $(ARGS)

test: $(STAMP)  ## the test suite, on CPU, one pytest-xdist worker per core (at most 4), longest tests first
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist worksteal $(ARGS)

lint: $(STAMP)  ## ruff: the checks of pyproject.toml [tool.ruff] and the formatting, changing nothing
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)  ## engine overhead and data throughput
	$(PY) -m sweeps.bench_engine

clean-venv:
	rm -rf $(VENV)

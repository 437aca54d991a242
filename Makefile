# hasmb: the two entry points are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv deps tools lint typecheck test test-unit demo clean cluster-up cluster-down

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# System packages and Go-built binaries the tests need (idempotent, cached under ~/.cache/hasmb).
deps: venv
	hack/install-deps

# hack/'s Python scripts have no .py suffix: ruff is given them by name
HACK_PY := $(shell grep -ls '^\#!/usr/bin/env python3' hack/*)

lint: venv
	$(VENV)/bin/ruff check operator tests $(HACK_PY)
	$(VENV)/bin/ruff format --check operator tests $(HACK_PY)

typecheck: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --config-file tests/mypy.ini tests

test-unit: venv
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

test: deps lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

cluster-up: deps
	hack/cluster up

cluster-down:
	hack/cluster down

demo: deps
	hack/demo

clean:
	-hack/cluster down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

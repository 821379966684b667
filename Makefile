# Latency Lab
#
#   make demo       create .venv, install the lab, run `latency-lab up` (Ctrl-C stops it)
#   make test       create .venv with the dev tools, run the test suite (without slow tests)
#   make test-slow  only the slow soak/load tests
#   make lint       ruff (lint and format) and mypy
#
# The virtual environment is (re)installed only when pyproject.toml changes: a stamp file in
# .venv remembers what was installed. Override the interpreter with `make PYTHON=python3.12 ...`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(VENV)/bin
# python3 when it is 3.11 or 3.12, else python3.12, else python3.11.
PYTHON ?= $(firstword $(foreach candidate,python3 python3.12 python3.11,$(shell \
	command -v $(candidate) >/dev/null 2>&1 && $(candidate) -c \
	'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null \
	&& echo $(candidate))))
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
# mypy reads the code through latency_lab/ (the import root) so that module names match imports.
LINT_PATHS = latency_lab tests

.PHONY: help demo test test-slow lint

help:
	@sed -n '3,7s/^# //p' $(firstword $(MAKEFILE_LIST))

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "Latency Lab needs Python 3.11 or 3.12 (python3, python3.12 or python3.11 on PATH)" >&2; \
		exit 1; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[lab]'
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@ $(RUNTIME_STAMP)

demo: $(RUNTIME_STAMP)
	$(BIN)/latency-lab up

test: $(DEV_STAMP)
	$(BIN)/pytest

test-slow: $(DEV_STAMP)
	$(BIN)/pytest -m slow

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(LINT_PATHS)

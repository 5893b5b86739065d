# private-llm: two commands on a fresh machine — `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK ?= dev
# Upstream CRD schemas used to validate custom resources (kept outside the repository).
CRDS ?= $(firstword $(wildcard ../shared/crds) $(wildcard shared/crds))
CRD_FLAG := $(if $(CRDS),--crd-schemas $(CRDS),)

CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30

.PHONY: install demo render check test lint format clean system-deps scanner-deps bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=26"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: install, render and check the sample stack offline, print what it would build
demo: install
	$(BIN)/private-llm render --stack $(STACK) --out build/$(STACK)
	$(BIN)/private-llm check --stack $(STACK) $(CRD_FLAG)

render: install
	$(BIN)/private-llm render --stack $(STACK) --out build/$(STACK)

check: install
	$(BIN)/private-llm check --stack $(STACK) $(CRD_FLAG)

## test: install what the tests need (Python deps; promtool and LuaJIT from Debian; checkov) and run them
test: install system-deps scanner-deps
	$(BIN)/python -m pytest -q

# promtool (Debian package prometheus) checks and unit-tests the alert rules; LuaJIT runs the log redaction filter.
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v luajit >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus luajit >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends prometheus luajit >/dev/null; fi; \
	fi

# checkov scans the rendered stacks (tests/stacks/test_checkov.py); its own virtualenv keeps its pins away from ours.
$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==$(CHECKOV_VERSION)"
	touch $@

scanner-deps: $(CHECKOV_VENV)/.installed

## bench: offline render/check timings and memory per stack and for 1-100 generated models → docs/benchmarks.md
bench: install
	$(BIN)/python -m infra.tools.bench --out docs/benchmarks.md

## lint: ruff and mypy over the code we ship
lint: install
	$(BIN)/ruff check components infra policies tests e2e
	$(BIN)/ruff format --check components infra policies tests e2e
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix components infra policies tests e2e
	$(BIN)/ruff format components infra policies tests e2e

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache $(CHECKOV_VENV)

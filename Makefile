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

.PHONY: install demo render check test lint format clean system-deps

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

## test: install what the tests need (Python deps; promtool and LuaJIT from Debian) and run them
test: install system-deps
	$(BIN)/python -m pytest -q

# promtool (Debian package prometheus) checks and unit-tests the alert rules; LuaJIT runs the log redaction filter.
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v luajit >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus luajit >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends prometheus luajit >/dev/null; fi; \
	fi

## lint: ruff and mypy over the code we ship
lint: install
	$(BIN)/ruff check components infra policies tests
	$(BIN)/ruff format --check components infra policies tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix components infra policies tests
	$(BIN)/ruff format components infra policies tests

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

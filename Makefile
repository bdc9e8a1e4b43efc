# Garrison — two commands: `make run` and `make test`. Both build .venv from this repo alone.
#   make run [PORT=8080]   installs only what garrison needs at run time, starts `garrison demo`
#   make test              installs the test extras too, runs ruff, mypy and the whole suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_STAMP  := $(VENV)/.run-$(HASH)
TEST_STAMP := $(VENV)/.test-$(HASH)
PORT   ?= 8080
# Test workers: two cores here and in CI; the suite is written to run in parallel.
WORKERS ?= 2
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(RUN_STAMP): $(BIN)/python pyproject.toml
	@echo "garrison: installing the run-time dependencies (pure wheels, well under a minute)…"
	$(PIP) install --progress-bar off -e .
	rm -f $(VENV)/.run-*
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	@echo "garrison: installing the test dependencies. llama-cpp-python (the real llama.cpp"
	@echo "  upstream the end-to-end tests drive) builds from C++ source the first time: it needs"
	@echo "  a C++ compiler and cmake, and takes ~15-20 min on 2 cores; pip caches the wheel after."
	$(PIP) install --progress-bar off -e '.[dev,llama]'
	rm -f $(VENV)/.test-*
	touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/garrison demo --port $(PORT)

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(wildcard src tests bench)
	$(BIN)/ruff format --check $(wildcard src tests bench)

# src strictly and tests with checked bodies: both are in pyproject.toml's [tool.mypy] files.
typecheck: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile

test: lint typecheck unit

bench: $(TEST_STAMP)
	$(BIN)/python bench/gateway_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

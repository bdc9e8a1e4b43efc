# Garrison — two commands: `make run` and `make test`. Both build .venv from this repo alone.
#   make run [PORT=8080]   installs only what garrison needs at run time, starts `garrison demo`
#   make test              installs the test extras (and, with node, the test identity
#                          provider: npm ci in tests/idp), runs ruff, mypy and the whole suite
#   make lock              re-resolves requirements/*.txt from pyproject.toml (after editing it)
# Installs are reproducible: every package comes from a lock file with its hashes
# (pip --require-hashes), then garrison itself with --no-deps.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
RUN_LOCK   := requirements/run.txt
TEST_LOCK  := requirements/test.txt
HASH   := $(shell cat pyproject.toml $(RUN_LOCK) $(TEST_LOCK) | sha1sum | cut -c1-12)
RUN_STAMP  := $(VENV)/.run-$(HASH)
TEST_STAMP := $(VENV)/.test-$(HASH)
PORT   ?= 8080
# Test workers: two cores here and in CI; the suite is written to run in parallel.
WORKERS ?= 2
PIP := $(BIN)/python -m pip --disable-pip-version-check
# The real OpenID provider the sign-in tests start (tests/idp: oidc-provider from npm, pinned
# by its package-lock.json); reinstalled when the lockfile changes.
IDP_DIR   := tests/idp
IDP_STAMP := $(IDP_DIR)/node_modules/.stamp-$(shell cat $(IDP_DIR)/package-lock.json | sha1sum | cut -c1-12)

.PHONY: run test lint typecheck unit bench clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(RUN_STAMP): $(BIN)/python pyproject.toml $(RUN_LOCK)
	@echo "garrison: installing the run-time dependencies from $(RUN_LOCK) (wheels, hash-checked, well under a minute)…"
	$(PIP) install --progress-bar off --require-hashes -r $(RUN_LOCK)
	$(PIP) install --progress-bar off --no-deps --no-build-isolation -e .
	@$(PIP) check >/dev/null || { $(PIP) check; \
	  echo "garrison: $(RUN_LOCK) is out of date with pyproject.toml: run make lock"; exit 1; }
	rm -f $(VENV)/.run-*
	touch $(RUN_STAMP)

$(IDP_STAMP): $(IDP_DIR)/package-lock.json
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
	  echo "garrison: installing the test identity provider (npm ci in $(IDP_DIR))…"; \
	  cd $(IDP_DIR) && npm ci --no-audit --no-fund && touch $(notdir $(IDP_STAMP)) && mv $(notdir $(IDP_STAMP)) node_modules/; \
	else \
	  echo "garrison: node/npm not found: the sign-in tests against a real provider will be skipped"; \
	fi

$(TEST_STAMP): $(RUN_STAMP) $(TEST_LOCK)
	@echo "garrison: installing the test dependencies. llama-cpp-python (the real llama.cpp"
	@echo "  upstream the end-to-end tests drive) builds from C++ source the first time: it needs"
	@echo "  a C++ compiler and cmake, and takes ~15-20 min on 2 cores; pip caches the wheel after."
	$(PIP) install --progress-bar off --require-hashes -r $(TEST_LOCK)
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

unit: $(TEST_STAMP) $(IDP_STAMP)
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile

test: lint typecheck unit

bench: $(TEST_STAMP)
	$(BIN)/python bench/gateway_bench.py

# The lock files: every package pinned with the hashes of all its published files, resolved
# from PyPI alone (not from any extra index this machine's pip is configured with).
# Run after changing a dependency in pyproject.toml; commit requirements/*.txt.
LOCK_VENV := .lock-venv
UV_COMPILE = UV_CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/uv pip compile \
	pyproject.toml requirements/build.in --python-version 3.11 --generate-hashes --no-config --quiet
lock:
	test -x $(LOCK_VENV)/bin/uv || ( $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar off \
	    --require-hashes -r requirements/tools.txt )
	$(UV_COMPILE) --upgrade -o $(RUN_LOCK)
	$(UV_COMPILE) --upgrade --extra dev --extra llama -o $(TEST_LOCK)
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/uv pip compile requirements/tools.in \
	  --python-version 3.11 --generate-hashes --no-config --quiet --upgrade -o requirements/tools.txt

clean:
	rm -rf $(VENV) $(LOCK_VENV) .mypy_cache .pytest_cache .ruff_cache

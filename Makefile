# mlmesh developer entry points. `make demo` and `make test` work on a fresh clone: both set up
# the virtual environment first when it is missing or older than a pyproject.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# Plain `torch` for users; CI passes TORCH_SPEC=torch==2.13.0 (a local CPU wheel).
TORCH_SPEC ?= torch
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.mlmesh-setup
PYPROJECTS := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) requirements-dev.txt
SERVICES := $(wildcard services/*)
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf

.PHONY: setup proto proto-check lint test test-unit up down status demo clean

setup: $(STAMP)

$(STAMP): $(PYPROJECTS)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.10+"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements-dev.txt \
	  -e libs/common -e "libs/sdk[local]" $(addprefix -e ,$(SERVICES))
	@touch $@
	@echo "setup done: $(VENV)"

$(BUF):
	@command -v npm >/dev/null || { echo "error: npm not found; it is needed for buf (proto lint)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

proto: $(STAMP)
	$(PY) tools/gen_proto.py

proto-check: $(STAMP)
	$(PY) tools/gen_proto.py --check

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd proto && ../$(BUF) lint

test: $(STAMP)
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

up: $(STAMP)
	$(BIN)/mlmesh up

down: $(STAMP)
	$(BIN)/mlmesh down

status: $(STAMP)
	$(BIN)/mlmesh status

# The whole platform for real: mesh up, a LoRA fine-tune pipeline from submit to served, queries
# through the gateway, a summary, mesh down (also on failure). See libs/sdk/src/mlmesh/local/demo.py.
demo: $(STAMP)
	$(PY) -m mlmesh.local.demo

clean:
	rm -rf $(VENV) .tools .mlmesh .pytest_cache .ruff_cache

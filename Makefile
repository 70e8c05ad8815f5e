# driftloop — the two commands: `make demo` and `make test`. Both bootstrap .venv from the lock.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench wheel clean tools

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/driftloop demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shared services tests benchmarks deploy

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian tools for the deployment tests and the benchmarks (best effort: never fails)
tools:
	@bash deploy/install-tools.sh

test: tools lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP) tools
	@set -e; for b in benchmarks/bench_*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python $$b; done

# the wheel and sdist built, checked, installed outside the checkout and run (CI runs it too)
wheel: $(STAMP)
	$(BIN)/python deploy/check_wheel.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

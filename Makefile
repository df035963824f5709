# The README's quick start: `make run` and `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo sim test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run feedd with the repository's config.json
run: $(STAMP)
	$(BIN)/feedd --config config.json

## run the exchange simulator and feedd pointed at it (no internet needed)
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## the exchange simulator alone
sim: $(STAMP)
	$(BIN)/python -m feedd.sim

## lint, type-check and run the whole test suite (installs Chromium for the browser tests)
test: $(STAMP)
	scripts/browser_setup.sh $(BIN)/python
	scripts/prometheus_setup.sh
	$(BIN)/ruff check feedd tests scripts
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check feedd tests scripts
	$(BIN)/ruff format --check feedd tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python scripts/bench_ingest.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The README's quick start: `make run` and `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions of everything installed (dependencies, dev tools, pip and the build backend):
# this venv, CI and scripts/install-service.sh all install with it. `make constraints` renews it.
CONSTRAINTS := constraints.txt

.PHONY: run demo sim test lint typecheck bench clean constraints

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c $(CONSTRAINTS) pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

## rewrite constraints.txt: the newest releases pyproject.toml allows for its dependencies, dev
## tools and build backend, installed into a fresh venv (feedd itself is not). Then make test.
constraints:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); \
	  p = d["project"]; print(*p["dependencies"], *p["optional-dependencies"]["dev"], \
	  *d["build-system"]["requires"], sep="\n")' > "$$tmp/requirements.txt"; \
	"$$tmp/venv/bin/pip" install --quiet --upgrade pip -r "$$tmp/requirements.txt"; \
	{ echo "# Exact versions for make, CI and scripts/install-service.sh (pip install -c)."; \
	  echo "# Made by 'make constraints' ($$($(PYTHON) --version)) from pyproject.toml's ranges: rerun it, don't edit."; \
	  "$$tmp/venv/bin/pip" freeze --all; } > $(CONSTRAINTS).new; \
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

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
	scripts/postgres_setup.sh
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

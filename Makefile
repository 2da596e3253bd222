# Every target creates .venv on first use and installs decaylab into it once
# (a stamp file records the install; editing pyproject.toml redoes it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
PIP := $(BIN)/python -m pip
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test bench lint format typecheck install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) torch==2.13.0
	$(PIP) install $(PIP_FLAGS) -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/decaylab demo --out decaylab-report

test: $(STAMP)
	$(BIN)/python -m pytest

$(BENCH_STAMP): $(STAMP)
	$(PIP) install $(PIP_FLAGS) -e ".[dev,bench]"
	# curvlinops pulls torchvision in through backpack; PyPI's torchvision does not
	# import beside this torch and breaks laplace-torch's import, so drop it.
	$(PIP) uninstall -y -q torchvision || true
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py --out benchmarks/results

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Rewrites files in place: what `make lint` then accepts.
format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Static types of src/ (settings in pyproject.toml, [tool.mypy]).
typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) decaylab-report .pytest_cache

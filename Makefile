# Every target creates .venv on first use and installs decaylab into it once
# (a stamp file records the install; editing pyproject.toml redoes it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
PIP := $(BIN)/python -m pip
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test bench lint format typecheck install clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) torch==2.13.0
	$(PIP) install $(PIP_FLAGS) -e ".[dev]"
	# laplace-torch (the advisor's reference) pulls torchvision in through backpack; PyPI's
	# torchvision does not import beside this torch and breaks laplace-torch's import, so drop it.
	$(PIP) uninstall -y -q torchvision || true
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/decaylab demo --out decaylab-report

# tests/test_browser.py opens the report in Debian's headless Chromium (no download at run time).
# As root (CI), install it where missing; otherwise say how, and the browser test skips
# (it fails instead when DECAYLAB_REQUIRE_BROWSER=1, as .ci/run sets).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update && apt-get install -y chromium chromium-driver; \
	else echo "note: chromium or chromedriver missing; run 'sudo make browser'" \
	  "(apt-get install -y chromium chromium-driver) or tests/test_browser.py skips"; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest

$(BENCH_STAMP): $(STAMP)
	$(PIP) install $(PIP_FLAGS) -e ".[dev,bench]"
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

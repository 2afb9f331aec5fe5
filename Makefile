# b2calib: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data-samples/bucket
# Debian packages the test suite needs; installed by `make test` when missing.
# (Browser tests will add chromium, the PostgreSQL tests postgresql.)
DEB_TEST_PACKAGES ?= postgresql chromium

.PHONY: demo test lint typecheck install system-deps sample bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(STAMP)

system-deps:
	@missing=""; for p in $(DEB_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check b2calib tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m pytest

# The sample bucket is committed; this regenerates it identically.
sample: $(STAMP)
	rm -rf $(SAMPLE)
	$(BIN)/b2calib simulate --config data-samples/bucket.toml --out $(SAMPLE)

# The demo's conditions database: the embedded SQLite backend, in a file of its own.
DEMO_DB ?= build/demo/conditions.sqlite

demo: $(STAMP)
	@test -f $(SAMPLE)/runs.json || $(MAKE) sample
	$(BIN)/b2calib summary $(SAMPLE)
	$(BIN)/b2calib size-report $(SAMPLE)/e0012/r00001/cdst_hlt_bhabha_e0012_r00001.root
	@mkdir -p $(dir $(DEMO_DB)) && rm -f $(DEMO_DB)
	$(BIN)/b2calib db import-local $(SAMPLE)/truth --gt sim_truth --db $(DEMO_DB) > /dev/null
	$(BIN)/b2calib gt list --db $(DEMO_DB)
	$(BIN)/b2calib lookup 12 7 --gt sim_truth --db $(DEMO_DB)

bench: $(STAMP)
	$(BIN)/python bench/bench_sim.py
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_calibrations.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build

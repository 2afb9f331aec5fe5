# b2calib: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data-samples/bucket
# Debian packages the test suite needs; installed by `make test` when missing.
# (the browser tests drive Debian's chromium, the PostgreSQL tests start a postgresql server)
DEB_TEST_PACKAGES ?= postgresql chromium

.PHONY: demo prompt-bucket test lint typecheck install system-deps sample bench screenshots clean

$(STAMP): pyproject.toml hatch_build.py
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
	  APT="$$SUDO apt-get -o DPkg::Lock::Timeout=900"; \
	  for try in $$(seq 40); do \
	    $$APT update -qq && $$APT install -y -qq $$missing && break; \
	    echo "apt-get failed (another apt or dpkg holding its lock?): again in 20 s"; sleep 20; \
	  done; \
	  for p in $$missing; do dpkg -s $$p >/dev/null 2>&1 || { echo "could not install $$p"; exit 1; }; done; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check b2calib apps tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# every test (-m "" lifts the fast selection a bare `pytest` makes), one test file per core
PYTEST_WORKERS ?= 2
test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m pytest -m "" -n $(PYTEST_WORKERS) --dist loadfile --durations=30

# The sample bucket is committed; this regenerates it identically.
sample: $(STAMP)
	rm -rf $(SAMPLE)
	$(BIN)/b2calib simulate --config data-samples/bucket.toml --out $(SAMPLE)

# The demo's database (conditions and data quality): the embedded SQLite backend, in a file of
# its own. The demo ends serving the dashboards on http://127.0.0.1:$(DEMO_PORT)/ (Ctrl-C stops).
DEMO_DB ?= build/demo/conditions.sqlite
DEMO_QA ?= build/demo/qa-data
DEMO_PORT ?= 5006

# The data-quality runs are simulated again when the simulator or their configuration changed
# since (a demo folder from an older checkout may hold branches of another type).
$(DEMO_QA)/runs.json: $(wildcard b2calib/sim/*.py) data-samples/qa.toml | $(STAMP)
	rm -rf $(DEMO_QA)
	$(BIN)/b2calib simulate --config data-samples/qa.toml --out $(DEMO_QA) 2>/dev/null

# The demo bucket of the prompt loop (data-samples/prompt.toml: every calibration converges on
# it), simulated again when the simulator or its configuration changed since; not committed.
DEMO_PROMPT ?= build/demo/prompt-bucket
$(DEMO_PROMPT)/runs.json: $(wildcard b2calib/sim/*.py) data-samples/prompt.toml | $(STAMP)
	@echo "== simulating the demo bucket of the prompt loop (data-samples/prompt.toml, ~1M events:"
	@echo "   3.7 GB, about 2 minutes on 2 cores, once; kept in $(DEMO_PROMPT))"
	rm -rf $(DEMO_PROMPT)
	$(BIN)/b2calib simulate --config data-samples/prompt.toml --out $(DEMO_PROMPT)

prompt-bucket: $(DEMO_PROMPT)/runs.json

demo: $(STAMP)
	@test -f $(SAMPLE)/runs.json || $(MAKE) sample
	$(BIN)/b2calib summary $(SAMPLE)
	$(BIN)/b2calib size-report $(SAMPLE)/e0012/r00001/cdst_hlt_bhabha_e0012_r00001.root
	@mkdir -p $(dir $(DEMO_DB)) && rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	$(BIN)/b2calib db import-local $(SAMPLE)/truth --gt sim_truth --db $(DEMO_DB) > /dev/null
	$(BIN)/b2calib gt list --db $(DEMO_DB)
	$(BIN)/b2calib lookup 12 7 --gt sim_truth --db $(DEMO_DB)
	@echo demo-manager | $(BIN)/b2calib user add manager --role manager --db $(DEMO_DB)
	@echo demo-expert | $(BIN)/b2calib user add cdc-expert --role expert --detectors CDC,ECL \
	  --db $(DEMO_DB)
	@echo demo-shifter | $(BIN)/b2calib user add shifter --role viewer --db $(DEMO_DB)
	@$(MAKE) --no-print-directory $(DEMO_PROMPT)/runs.json
	@echo "== the demo bucket of the prompt loop: bucket 1 of experiment 16 (12 runs, 9.1 fb^-1); the"
	@echo "   constants before it (input tag previous_e16) are its truth but for one planted outlier:"
	@echo "   ECL crystal 1234's time offset moved by +4 ns since (data-samples/prompt.toml)"
	$(BIN)/b2calib summary $(DEMO_PROMPT)
	$(BIN)/b2calib db import-local $(DEMO_PROMPT)/previous --gt previous_e16 --db $(DEMO_DB) > /dev/null
	@echo "== its data quality: the 12 runs collected (about 40 s); the manager records the"
	@echo "   detector change at the simulator's intervention run (simulation.json: ECL crate 17's"
	@echo "   boards, CDC boards, TOP module 5, a KLM HV trip...) as a QA period, so that the runs"
	@echo "   after it get references and trend bands of their own; a reference run per class of"
	@echo "   runs (run type, beam energy) and period of experiment 16 chosen (--auto), evaluated"
	$(BIN)/b2calib qa collect $(DEMO_PROMPT) --db $(DEMO_DB)
	$(BIN)/b2calib qa period add --exp 16 --db $(DEMO_DB) --from-run $$($(BIN)/python -c \
	  "import json; print(json.load(open('$(DEMO_PROMPT)/simulation.json'))['intervention_run'])") \
	  --reason "ECL crate 17 boards, CDC boards 120-123, TOP module 5, BKLM HV trip, SVD, HER energy"
	$(BIN)/b2calib qa reference set --exp 16 --auto --db $(DEMO_DB) > /dev/null
	$(BIN)/b2calib qa evaluate --exp 16 --db $(DEMO_DB)
	@echo "== klm-strip-efficiency reads the runs certified Good or Recoverable: for the demo the"
	@echo "   manager certifies every detector of the 12 runs GOOD without a shift's review: --force"
	@echo "   confirms GOOD over any automatic ERROR (listed below), kept as such in the history"
	B2CALIB_PASSWORD=demo-manager $(BIN)/b2calib signoff flag 16 1-12 all GOOD --user manager \
	  --force --comment "demo: certified GOOD for the prompt loop, automatic status not reviewed" \
	  --db $(DEMO_DB) > build/demo/signoff-e16.txt
	@grep -E "^run |confirmed \(--force\)" build/demo/signoff-e16.txt | grep -B1 -- "confirmed (--force)" \
	  | grep -v "^--$$" || echo "   (nothing needed confirming)"
	@echo "== the prompt loop over bucket 1: every registered calibration (about 2 minutes)"
	$(BIN)/b2calib prompt --data $(DEMO_PROMPT) --bucket 1 --gt previous_e16 \
	  --json build/demo/prompt-summary.json --db $(DEMO_DB) \
	  || echo "(the prompt loop exits with 1 when a calibration is not OK: see the table above)"
	@echo "== the manager approves the staging tag; it goes into the running tag demo_running"
	-$(BIN)/b2calib gt create demo_running --description "demo running tag" --db $(DEMO_DB)
	-$(BIN)/b2calib gt state demo_running RUNNING --db $(DEMO_DB)
	-B2CALIB_PASSWORD=demo-manager $(BIN)/b2calib gt approve prompt_bucket1 --user manager \
	  --comment "demo: the prompt loop's constants checked" --db $(DEMO_DB)
	$(BIN)/b2calib prompt --data $(DEMO_PROMPT) --bucket 1 --gt previous_e16 --quiet \
	  --update-running demo_running --mode fix-closed --db $(DEMO_DB) | sed -n '/^running update/,$$p'
	@echo "== a tag left to review in the payload-validation page: ecl-time alone over bucket 1"
	@echo "   into prompt_bucket1_ecl (TESTING; an ECL-only tag: the ECL expert may approve it)"
	$(BIN)/b2calib prompt --data $(DEMO_PROMPT) --bucket 1 --gt previous_e16 --only ecl-time \
	  --staging prompt_bucket1_ecl --quiet --db $(DEMO_DB) \
	  || echo "(the prompt loop exits with 1 when a calibration is not OK: see the table above)"
	@echo "== data quality: 30 simulated runs with faults injected in runs 9 (CDC), 15 (TOP), 23 (ECL)"
	@$(MAKE) --no-print-directory $(DEMO_QA)/runs.json
	$(BIN)/b2calib qa collect $(DEMO_QA) --db $(DEMO_DB)
	$(BIN)/b2calib qa reference set --exp 14 --auto --db $(DEMO_DB) > /dev/null
	$(BIN)/b2calib qa evaluate --exp 14 --db $(DEMO_DB)
	@echo "== dashboards: log in as manager/demo-manager, cdc-expert/demo-expert (CDC and ECL) or"
	@echo "   shifter/demo-shifter (anonymous visitors may read)"
	$(BIN)/b2calib serve --db $(DEMO_DB) --port $(DEMO_PORT) --allow-anonymous

# The README's screenshots: the browser tests that take them (the first shoots QAM, sign-off and
# run summary; the others the index, the conditions browser and the payload validation), then
# docs/screenshots.py copies the chosen ones to docs/screenshots at 1280x800, optimised.
SCREENSHOT_TESTS ?= tests/test_browser.py::test_screenshots_of_every_app \
  $(wildcard tests/test_browser_payloads.py) tests/test_browser_conditions.py
screenshots: $(STAMP) system-deps
	rm -rf build/test-artifacts/screenshots
	$(BIN)/python -m pytest -m "" -q -p no:cacheprovider $(SCREENSHOT_TESTS)
	$(BIN)/python docs/screenshots.py

X4_ROWS = beamspot boostvector ecms svd-hot-strips klm-time top-channel-t0 arich-channel-mask cdc-t0
bench: $(STAMP)
	$(BIN)/python bench/bench_sim.py
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_calibrations.py
	@# the rows above 3x the read, with 4x the events per run: what grows with the events
	$(BIN)/python bench/bench_calibrations.py --scale 4 --output bench/RESULTS_calibrations_x4.md \
	  $(X4_ROWS)
	$(BIN)/python bench/bench_template_fit.py
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_qa.py
	$(BIN)/python bench/bench_imports.py
	$(BIN)/python bench/bench_prompt.py
	$(BIN)/python bench/bench_review.py
	$(BIN)/python bench/bench_qa_collect.py
	$(BIN)/python bench/bench_conditions_lookup.py
	@# the QA pages in Chromium at 3000 runs (their database built once into bench/out/), and
	@# the floor under them: Panel and Bokeh with nothing of ours
	$(BIN)/python bench/bench_page_floor.py
	$(BIN)/python bench/bench_signoff_page.py --repeat 3
	$(BIN)/python bench/bench_runsummary_page.py --runs 3000 --repeat 3
	$(BIN)/python bench/bench_qam_page.py --runs 3000 --repeat 3
	@# the drill-down and the conditions page (in Chromium), on the database `make demo` leaves
	@if [ -f $(DEMO_DB) ]; then $(BIN)/python bench/bench_fitview.py $(DEMO_DB) && \
	  $(BIN)/python bench/bench_conditions_page.py --db $(DEMO_DB); \
	else echo "bench_fitview.py, bench_conditions_page.py skipped: no $(DEMO_DB) (make demo makes it)"; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build

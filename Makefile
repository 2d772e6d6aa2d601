# File Conveyor.  `make` alone lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO_OUT ?= $(CURDIR)/.cache/demo
# What runs File Conveyor runs it from the project's venv: its bin/ first on PATH, no user site-packages, so a
# package installed by hand in another interpreter can never make a target work (or a test pass) by accident.
RUN := PATH="$(abspath $(VENV))/bin:$$PATH" PYTHONNOUSERSITE=1

.DEFAULT_GOAL := help
.PHONY: help deps test-deps demo try-sftp try-ftp test lint check bench chaos scale-chaos scale-bench css-soak clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

deps: $(VENV)/.fc-deps ## install File Conveyor into ./.venv

# Installed once, then again only when pyproject.toml changes (or the venv is made anew): `make demo` run again
# spent 5 of its 6 s in pip.
$(VENV)/.fc-deps: pyproject.toml | $(PY)
	$(PIP) install -e .
	@touch $@

test-deps: $(PY) ## install what the tests need (Python packages, Debian packages)
	$(PIP) install -e '.[test]'
	scripts/install-system-deps test

demo: deps ## the main job on the embedded demo: sync examples/site to a local CDN folder, with a database
	@mkdir -p $(DEMO_OUT)
	FC_STATE_DIR=$(DEMO_OUT)/state $(RUN) \
	  bash examples/pipelines.sh sync_to_folder examples/site $(DEMO_OUT) | $(PY) -c \
	  'import sys, json; [print(e["kind"], e["rel"], "->", e.get("url") or e.get("error")) for e in map(json.loads, sys.stdin)]'
	@echo
	@echo "files:    $(DEMO_OUT)/cdn"
	@echo "database: $(DEMO_OUT)/synced_files.db  (sqlite3 $(DEMO_OUT)/synced_files.db 'SELECT * FROM synced_files')"
	@echo "Run 'make demo' again: nothing changed, so nothing is sent. Touch a file in examples/site and see."

# Servers to try the sftp:// and ftp:// destinations on: the test suite's (tests/servers/), on a free port of
# 127.0.0.1 in a temporary folder, until Ctrl-C (tools/try-server; README "Trying FTP and SFTP servers").
try-sftp: deps ## a local SFTP server (OpenSSH's sshd) until Ctrl-C: prints the --to URL, its key and a <server> for config.xml
	$(RUN) $(PY) tools/try-server sftp

try-ftp: deps ## a local FTP server (pyftpdlib) until Ctrl-C: prints the --to URL, its password and a <server> for config.xml
	@$(PY) -c 'import pyftpdlib' 2>/dev/null || $(PIP) install 'pyftpdlib>=1.5.7'
	$(RUN) $(PY) tools/try-server ftp

# Two test processes (pytest-xdist): most tests wait on subprocesses, servers and timeouts, not on the CPU, so two
# at a time take about half the time on 2 cores.  Each process starts its own session servers (free ports, own
# temporary trees).  TEST_JOBS=0 runs them one at a time, in one process.
TEST_JOBS ?= 2
test: test-deps ## run the test suite (what CI runs; TEST_JOBS=0: one test at a time)
	$(RUN) $(PY) -m pytest -q -n $(TEST_JOBS) --durations=30

lint: test-deps ## ruff: lint and format check
	$(VENV)/bin/ruff check lib tests bench tools/try-server
	$(VENV)/bin/ruff format --check lib tests bench tools/try-server

check: lint test ## lint, then the tests

# The AWS CLI, s3_bench's peer, in a venv of its own: it pins its own botocore.
AWSCLI := .cache/awscli

bench: test-deps ## benchmarks against the peers named in the issues (long: an hour or more; writes bench/results/)
	scripts/install-system-deps bench
	test -x $(AWSCLI)/bin/aws || ($(PYTHON) -m venv $(AWSCLI) && $(AWSCLI)/bin/pip install -q awscli)
	$(RUN) $(PY) bench/watch_bench.py
	$(RUN) $(PY) bench/process_bench.py
	$(RUN) $(PY) bench/transport_bench.py
	PATH="$(CURDIR)/$(AWSCLI)/bin:$(abspath $(VENV))/bin:$$PATH" PYTHONNOUSERSITE=1 $(PY) bench/s3_bench.py
	PATH="$(CURDIR)/$(AWSCLI)/bin:$(abspath $(VENV))/bin:$$PATH" PYTHONNOUSERSITE=1 $(PY) bench/pipeline_bench.py

ROUNDS ?= 100
FILES ?= 3000
TOPOLOGY ?= both
chaos: test-deps ## kill -9 stages for ROUNDS rounds (default 100) over FILES files, of the 5-stage pipeline and of fc-conveyor's fc-watch|fc-tee|two rules (TOPOLOGY=pipeline|conveyor|both), then check nothing is lost
	$(RUN) $(PY) bench/chaos.py --rounds $(ROUNDS) --files $(FILES) --topology $(TOPOLOGY)

SCALE_ROUNDS ?= 60
SCALE_FILES ?= 2000
SCALE_PARTITIONS ?= auto
scale-chaos: test-deps ## 3 workers (fc-consume|fc-process|fc-transport|fc-record on PostgreSQL), nats-server, fc-publish, fc-watch killed -9 for SCALE_ROUNDS rounds over SCALE_FILES files, one worker for good; nothing lost, order held
	$(RUN) $(PY) bench/scale_chaos.py --rounds $(SCALE_ROUNDS) --files $(SCALE_FILES) --partitions $(SCALE_PARTITIONS)

SCALE_BENCH_FILES ?= 2000
scale-bench: test-deps ## files/s through the broker hop with 1, 2 and 4 workers doing 50 ms per file; CPU per event
	$(RUN) $(PY) bench/scale_bench.py --files $(SCALE_BENCH_FILES)

CSS_ROUNDS ?= 30
css-soak: test-deps ## unique names + link_updater: change CSS_ROUNDS bursts (default 30) of a 40-stylesheet site, check no published reference breaks
	$(RUN) $(PY) bench/css_soak.py --rounds $(CSS_ROUNDS)

FUZZ_EXAMPLES ?= 200
FUZZ_SEED ?= $(shell date +%s)
fuzz: test-deps ## bad lines into every stage, FUZZ_EXAMPLES (default 200) per stage, a new FUZZ_SEED each run
	FC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FC_FUZZ_SEED=$(FUZZ_SEED) $(PY) -m pytest -q -p no:cacheprovider \
	  -o addopts="-ra --timeout=0" tests/security/test_fuzz.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache

# streams: developer entry points. `make test` is what CI runs (.ci/run).
#
#   make install   .venv with Python >= 3.11 and `pip install -e '.[dev]'` (skipped when current)
#   make test      the whole pytest suite (a real Kafka broker is started when tests need one)
#   make run       the whole system (`streams up`): local broker unless STREAMS_KAFKA_BOOTSTRAP
#                  is set, topics, worker, SMTP + webhook catchers, a demo with live progress
#   make bench     the benchmark suite (python -m bench)
#   make lint      ruff check, ruff format --check, mypy
#   make clean     caches and build leftovers; `make distclean` also removes .venv and .streams

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install test run bench lint clean distclean

help:
	@sed -n '3,10p' Makefile | sed 's/^# *//'

install: $(STAMP)

# Re-runs only when pyproject.toml changed or the venv is gone (the stamp lives inside it).
$(STAMP): pyproject.toml
	@if [ -x "$(BIN)/python" ] && ! "$(BIN)/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "$(VENV) has Python < 3.11: recreating it"; rm -rf "$(VENV)"; \
	fi
	@if [ ! -x "$(BIN)/python" ]; then \
	  if ! command -v "$(PYTHON)" >/dev/null 2>&1; then \
	    echo "error: $(PYTHON) not found: install Python >= 3.11, or make PYTHON=/path/to/python3.11" >&2; \
	    exit 1; \
	  fi; \
	  if ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	    echo "error: Python >= 3.11 is required but $(PYTHON) is $$("$(PYTHON)" -V 2>&1):" \
	      "install 3.11+, or make PYTHON=/path/to/python3.11" >&2; \
	    exit 1; \
	  fi; \
	  echo "creating $(VENV) with $$("$(PYTHON)" -V 2>&1)"; \
	  "$(PYTHON)" -m venv "$(VENV)" || { \
	    echo "error: '$(PYTHON) -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; \
	    exit 1; }; \
	fi
	"$(BIN)/python" -m pip install --disable-pip-version-check --no-input -q -e '.[dev]'
	@touch "$(STAMP)"

# pytest exit 5 means no test was collected: a failure here.
test: install
	@rc=0; "$(BIN)/pytest" $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; \
	exit $$rc

run: install
	@exec "$(BIN)/streams" up $(UP_ARGS)

bench: install
	"$(BIN)/python" -m bench

lint: install
	"$(BIN)/ruff" check .
	"$(BIN)/ruff" format --check .
	"$(BIN)/mypy"

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache build dist src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Stops the local broker first: its data lives in .streams.
distclean: clean
	@if [ -x "$(BIN)/streams" ]; then "$(BIN)/streams" broker stop || true; fi
	rm -rf "$(VENV)" .streams

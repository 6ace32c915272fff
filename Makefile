# streams: developer entry points. `make test` is what CI runs (.ci/run).
#
#   make install   .venv with Python >= 3.11 and `pip install -e '.[dev,bench]'` (skipped when current)
#   make test      the whole pytest suite (a real Kafka broker is started when tests need one)
#   make run       the whole system (`streams up`): local broker unless STREAMS_KAFKA_BOOTSTRAP
#                  is set, topics, worker, SMTP + webhook catchers, a demo with live progress
#   make bench     the headline benchmarks (P0 F0 P1 P3 P7 P9), goals table and PNG (bench/README.md)
#   make bench-all every benchmark case (python -m bench); both take BENCH_ARGS="--events 30000"
#   make lint      ruff check, ruff format --check, mypy
#   make tools     helm and stripe-mock (go install, pinned) into .tools/bin for the tests
#   make clean     caches and build leftovers; `make distclean` also removes .venv and .streams

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# the suite mostly waits on brokers and workers: two pytest-xdist processes, a broker each,
# whole files per process; TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2
BENCH_CASES ?= P0,F0,P1,P3,P7,P9
BENCH_ARGS ?=
# helm for the chart tests: a Go module built once per version into a cache outside the
# clone (CI clones afresh), then copied into the git-ignored .tools/bin
HELM_VERSION := v3.17.3
# stripe-mock (Stripe's own mock server, a Go module): the payment client's request shapes
# are checked against it once (tests/integration/test_payment_provider.py)
STRIPE_MOCK_VERSION := v0.203.0
TOOLS := .tools/bin
TOOLS_CACHE ?= $(HOME)/.cache/streams-tools
# CRD schemas of the chart's optional kinds, from the projects' Go modules (go mod download)
PROMETHEUS_OPERATOR_MODULE := github.com/prometheus-operator/prometheus-operator@v0.79.2
KEDA_MODULE := github.com/kedacore/keda/v2@v2.16.1
CRDS := .tools/crds

.PHONY: help install test run bench bench-all lint tools clean distclean

help:
	@sed -n '3,12p' Makefile | sed 's/^# *//'

tools: $(TOOLS)/helm $(TOOLS)/stripe-mock $(CRDS)/.stamp

$(CRDS)/.stamp: Makefile
	@command -v go >/dev/null 2>&1 || { echo "error: go not found (needed for the CRD schemas)" >&2; exit 1; }
	@mkdir -p "$(CRDS)"
	@po=$$(go mod download -json "$(PROMETHEUS_OPERATOR_MODULE)" | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	keda=$$(go mod download -json "$(KEDA_MODULE)" | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$po" && test -n "$$keda"; \
	cp "$$po"/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
	   "$$po"/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml \
	   "$$keda"/config/crd/bases/keda.sh_scaledobjects.yaml \
	   "$$keda"/config/crd/bases/keda.sh_triggerauthentications.yaml "$(CRDS)/"
	@chmod u+w "$(CRDS)"/*.yaml && touch "$@"

$(TOOLS)/helm: Makefile
	@mkdir -p "$(TOOLS)" "$(TOOLS_CACHE)/helm-$(HELM_VERSION)"
	@if [ ! -x "$(TOOLS_CACHE)/helm-$(HELM_VERSION)/helm" ]; then \
	  if ! command -v go >/dev/null 2>&1; then \
	    echo "error: go not found: the chart tests build helm with 'go install' (install Go >= 1.22)" >&2; \
	    exit 1; \
	  fi; \
	  echo "building helm $(HELM_VERSION) (go install, once per version)"; \
	  GOBIN="$(TOOLS_CACHE)/helm-$(HELM_VERSION)" go install "helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)"; \
	fi
	@cp "$(TOOLS_CACHE)/helm-$(HELM_VERSION)/helm" "$(TOOLS)/helm"

$(TOOLS)/stripe-mock: Makefile
	@mkdir -p "$(TOOLS)" "$(TOOLS_CACHE)/stripe-mock-$(STRIPE_MOCK_VERSION)"
	@if [ ! -x "$(TOOLS_CACHE)/stripe-mock-$(STRIPE_MOCK_VERSION)/stripe-mock" ]; then \
	  command -v go >/dev/null 2>&1 || { echo "error: go not found (stripe-mock is built with 'go install')" >&2; exit 1; }; \
	  echo "building stripe-mock $(STRIPE_MOCK_VERSION) (go install, once per version)"; \
	  GOBIN="$(TOOLS_CACHE)/stripe-mock-$(STRIPE_MOCK_VERSION)" go install "github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)"; \
	fi
	@cp "$(TOOLS_CACHE)/stripe-mock-$(STRIPE_MOCK_VERSION)/stripe-mock" "$(TOOLS)/stripe-mock"

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
	"$(BIN)/python" -m pip install --disable-pip-version-check --no-input -q -e '.[dev,bench]'
	@touch "$(STAMP)"

# pytest exit 5 means no test was collected: a failure here.
test: install tools
	@rc=0; "$(BIN)/pytest" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; \
	exit $$rc

run: install
	@exec "$(BIN)/streams" up $(UP_ARGS)

bench: install
	"$(BIN)/python" -m bench --only $(BENCH_CASES) $(BENCH_ARGS)

bench-all: install
	"$(BIN)/python" -m bench $(BENCH_ARGS)

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
	rm -rf "$(VENV)" .streams .tools

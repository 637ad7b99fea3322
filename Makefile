# make install   create .venv and install notifier with the local stack and the development
#                tools (idempotent)
# make run       install, then start the embedded local stack (notifier local)
# make test      install (and Debian's chromium, mosquitto-clients and haproxy, for the browser
#                test, the stock MQTT client's test and the load-balanced instances), then run
#                the whole suite
# make lint      ruff, mypy and bandit on the code, cfn-lint and checkov on the CloudFormation
#                template, and every link of README.md and docs/
# make bench     install with the plot extra, then run the benchmark (BENCH_ARGS=... to change it)
# make check-wheel  build a plain wheel, install it into a fresh virtualenv and check it

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# checkov pins boto3 and other libraries older than the daemon's, so it has a virtualenv of
# its own, used only to scan the template.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := .venv-checkov
CHECKOV         := $(CHECKOV_VENV)/bin/checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

CHROMIUM ?= chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-plot checkov test-tools run test lint bench check-wheel clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "notifier needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	@touch $(STAMP)

checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

install-plot: install
	$(BIN)/python -m pip install --quiet -e '.[local,dev,plot]'

run: install
	$(BIN)/notifier local

# Debian packages the tests drive, installed with apt-get when missing (never a download):
# chromium for the dashboard's browser test, mosquitto-clients for a stock MQTT client
# against the local broker, haproxy in front of several daemons. Each is COMMAND:PACKAGE;
# commands are looked for in sbin too (haproxy is there, outside most users' PATH).
TEST_TOOLS := $(CHROMIUM):chromium mosquitto_sub:mosquitto-clients haproxy:haproxy

test-tools:
	@missing=""; for tool in $(TEST_TOOLS); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v "$${tool%%:*}" >/dev/null \
	    || missing="$$missing $${tool#*:}"; done; \
	[ -z "$$missing" ] || { \
	  command -v apt-get >/dev/null || { echo "missing:$$missing (install them; CHROMIUM=<path> for another Chromium)"; exit 1; }; \
	  echo "installing Debian's$$missing for the tests"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

# The suite runs in this many worker processes (pytest-xdist), each with a local stack of its
# own on free ports. Most tests wait on workflows, timers and other processes rather than
# use a core, so more workers than cores pay. TEST_WORKERS=0: all in this one process.
TEST_WORKERS ?= 4

test: install checkov test-tools
	CHROMIUM=$(CHROMIUM) CHECKOV=$(CHECKOV) $(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: install checkov
	$(BIN)/ruff check notifier iotauth statemachines tests scripts
	$(BIN)/mypy
	$(BIN)/mypy --strict scripts
	$(BIN)/python scripts/check_doc_links.py
	$(BIN)/bandit --quiet --configfile pyproject.toml --recursive notifier iotauth statemachines
	$(BIN)/python -m notifier.package --lint --checkov $(CHECKOV)

bench: install-plot
	$(BIN)/notifier bench $(BENCH_ARGS)

# A plain wheel in a fresh virtualenv: the daemon installs and runs without the local stack.
check-wheel: install
	rm -rf build/wheel build/wheel-venv
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir build/wheel .
	$(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/python -m pip install --quiet build/wheel/notifier-*.whl
	build/wheel-venv/bin/notifier serve --help >/dev/null
	! build/wheel-venv/bin/python -m pip list 2>/dev/null | grep -iE '^(moto|amqtt) '
	build/wheel-venv/bin/notifier local 2>&1 | grep -F "pip install 'notifier[local]'"
	@echo "check-wheel: the plain wheel has no moto or amqtt and the daemon runs"

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build *.egg-info

# make install   create .venv and install notifier with the local stack and the development
#                tools, at the versions locked in requirements/dev.txt (idempotent)
# make lock      update requirements/dev.txt and requirements/daemon.txt from pyproject.toml's
#                ranges, keeping what still fits (LOCK_ARGS=--upgrade: the newest of everything;
#                LOCK_ARGS='--upgrade-package aiohttp': of one)
# make run       install, then start the embedded local stack (notifier local)
# make test      install (and Debian's chromium, mosquitto-clients, haproxy and prometheus, for
#                the browser test, the stock MQTT client's test, the load-balanced instances and
#                promtool's checks of /metrics), then run the whole suite
# make lint      ruff, mypy and bandit on the code, cfn-lint and checkov on the CloudFormation
#                template, promtool on the alert rules and their unit tests, and every link of
#                README.md and docs/
# make bench     install with the plot extra, then run the benchmark (BENCH_ARGS=... to change it)
# make check-wheel  build a plain wheel, install it into a fresh virtualenv and check it

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The lock files: every package and its hashes, for any Python notifier supports. dev.txt is
# the daemon with the local stack and the development tools (make install, CI); daemon.txt
# the daemon alone, at the same versions (a production install: see
# docs/operations-observability.md); uv.txt the installer make install uses, which pip
# installs first: uv installs the rest in seconds where pip takes minutes. Unlike pip, uv
# leaves compiling to bytecode to the first import, which keeps nothing where
# PYTHONDONTWRITEBYTECODE is set: each of the suite's Python processes (its workers, each
# local stack's AWS endpoint, the daemons it runs) would compile moto, botocore and the rest
# again, seconds of CPU each. --compile-bytecode compiles them once, at install, and
# compileall the project's own code (a module changed since is compiled as it is imported).
LOCK_DEV    := requirements/dev.txt
LOCK_DAEMON := requirements/daemon.txt
LOCK_UV     := requirements/uv.txt
LOCK_ARGS   ?=
UV          := $(BIN)/uv

# checkov pins boto3 and other libraries older than the daemon's, so it has a virtualenv of
# its own, used only to scan the template; the project's uv installs it (pip takes 25 s).
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := .venv-checkov
CHECKOV         := $(CHECKOV_VENV)/bin/checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

CHROMIUM ?= chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install lock install-plot checkov test-tools lint-tools run test lint lint-code lint-template \
	lint-alerts bench check-wheel clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK_DEV) $(LOCK_UV)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "notifier needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK_UV)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python --require-hashes -r $(LOCK_DEV)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q notifier iotauth statemachines tests
	@touch $(STAMP)

lock: install
	$(UV) pip compile --quiet --universal --generate-hashes $(LOCK_ARGS) \
	  --extra local --extra dev -o $(LOCK_DEV) pyproject.toml
	$(UV) pip compile --quiet --universal --generate-hashes \
	  -c $(LOCK_DEV) -o $(LOCK_DAEMON) pyproject.toml
	echo uv | $(UV) pip compile --quiet --universal --generate-hashes \
	  -c $(LOCK_DEV) -o $(LOCK_UV) -

checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): | $(STAMP)
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv --without-pip $(CHECKOV_VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(CHECKOV_VENV)/bin/python \
	  'checkov==$(CHECKOV_VERSION)'
	@touch $@

# The plot extra is not locked (the benchmark's plots only); what is locked stays as locked.
install-plot: install
	$(UV) pip install --quiet --python $(BIN)/python -c $(LOCK_DEV) -e '.[local,dev,plot]'

run: install
	$(BIN)/notifier local

# Debian packages the tests drive, installed with apt-get when missing (never a download):
# chromium for the dashboard's browser test, mosquitto-clients for a stock MQTT client
# against the local broker, haproxy in front of several daemons, prometheus for promtool
# (the lint of the alert rules, and the tests' checks of /metrics). Each is COMMAND:PACKAGE;
# commands are looked for in sbin too (haproxy is there, outside most users' PATH).
LINT_TOOLS := promtool:prometheus
TEST_TOOLS := $(CHROMIUM):chromium mosquitto_sub:mosquitto-clients haproxy:haproxy $(LINT_TOOLS)

test-tools: TOOLS = $(TEST_TOOLS)
lint-tools: TOOLS = $(LINT_TOOLS)
test-tools lint-tools:
	@missing=""; for tool in $(TOOLS); do \
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
# Each worker starts with an equal share of the suite in file order, so that a module's tests
# mostly share one worker and what its fixtures start (a stack with other quotas, a browser)
# is started once; one that runs out takes half of what another has left.
TEST_WORKERS ?= 4

test: install checkov test-tools
	CHROMIUM=$(CHROMIUM) CHECKOV=$(CHECKOV) $(BIN)/python -m pytest -n $(TEST_WORKERS) \
	  --dist worksteal $(PYTEST_ARGS)

# Three independent parts, which `make -j2 lint` (as CI) runs side by side: the code's, the
# template's and the alert rules'.
lint: lint-code lint-template lint-alerts

lint-code: install
	$(BIN)/ruff check notifier iotauth statemachines tests scripts
	$(BIN)/mypy
	$(BIN)/mypy --strict scripts
	$(BIN)/python scripts/check_doc_links.py
	$(BIN)/bandit --quiet --configfile pyproject.toml --recursive notifier iotauth statemachines

lint-template: install checkov
	$(BIN)/python -m notifier.ops.package --lint --checkov $(CHECKOV)

lint-alerts: lint-tools
	promtool check rules config/alerts.yml
	promtool test rules config/prometheus-tests.yml

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

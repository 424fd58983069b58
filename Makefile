# Two commands: `make run` opens the console, `make test` runs lint and the whole suite.
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-scaleout soak conformance package clean debian-packages

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,package]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/wsconsole gui

lint: $(STAMP)
	$(BIN)/ruff check wsconsole tests benchmarks packaging
	$(BIN)/lint-imports

# Debian packages some tests use: headless Chromium (the browser tests of the proxy) and
# certutil (trusting the proxy's local CA in that browser). Installed only when running as
# root with apt-get; otherwise those tests skip and say why.
DEBIAN_PACKAGES := chromium libnss3-tools

debian-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    ! (command -v chromium && command -v certutil) >/dev/null 2>&1; then \
	    echo "installing $(DEBIAN_PACKAGES) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	fi

# -rs prints why any test was skipped; the package test needs PyInstaller (installed above).
test: lint debian-packages
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -rs -p no:cacheprovider

# Benchmarks against peers (Node socket.io, python-socketio, plain asyncio websockets): writes
# docs/benchmarks.md and docs/benchmarks.json. Node.js and npm are needed: the load generator
# is Node.js `ws` clients (benchmarks/loadgen.js), installed under benchmarks/.node by npm.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks

# Fan-out through a sharded broker (1 server; Valkey Clusters of 1, 2, 3 shards) and the cost
# of WAIT before a publish's acknowledgement: writes docs/scale-out.json (docs/scale-out.md).
bench-scaleout: $(STAMP)
	$(BIN)/python -m benchmarks.scaleout

# A long chaos run: 600 overlapping faults (WSCONSOLE_CHAOS_FAULTS) per node flavour against
# a real cluster, judged by an independent client; prints the table. Replay a failing run
# with the seed it prints: make soak WSCONSOLE_CHAOS_SEED=<seed>.
WSCONSOLE_CHAOS_FAULTS ?= 600
soak: $(STAMP)
	WSCONSOLE_CHAOS_FAULTS=$(WSCONSOLE_CHAOS_FAULTS) WSCONSOLE_CHAOS_SEED=$(WSCONSOLE_CHAOS_SEED) \
	    $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/test_chaos.py

# Every Autobahn group (kosoku) against the harness and the console's client, next to
# websockets; rewrites the table in docs/conformance.md. Long on two cores (tens of minutes).
conformance: $(STAMP)
	$(BIN)/python -m tests.conformance_report --write docs/conformance.md

# A one-folder PyInstaller bundle, a .tar.gz and a .deb in dist/ (see docs/packaging.md).
package: $(STAMP)
	$(BIN)/python packaging/build.py

clean:
	rm -rf $(VENV) build dist *.egg-info

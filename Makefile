# Two commands: `make run` opens the console, `make test` runs lint and the whole suite.
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench package clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,package]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/wsconsole gui

lint: $(STAMP)
	$(BIN)/ruff check wsconsole tests benchmarks packaging
	$(BIN)/lint-imports

# -rs prints why any test was skipped; the package test needs PyInstaller (installed above).
test: lint
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -rs -p no:cacheprovider

# Benchmarks against peers (python-socketio, Node socket.io, websockets.broadcast): writes
# docs/benchmarks.md and docs/benchmarks.json. Node.js and npm are needed for the Node peer.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks

# A one-folder PyInstaller bundle, a .tar.gz and a .deb in dist/ (see docs/packaging.md).
package: $(STAMP)
	$(BIN)/python packaging/build.py

clean:
	rm -rf $(VENV) build dist *.egg-info

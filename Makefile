# Two commands for a fresh machine with Python 3.11+ and make:
#   make run   - the demo: embedded NATS + SQLite, one task through agents, tools and the outbox
#   make test  - lint (ruff), types (mypy) and the test suite (real nats-server, SQLite, PostgreSQL)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PEERS  := .venv-peers

.PHONY: run up test lint typecheck pytest bench schema clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ballast demo

up: $(STAMP)
	$(BIN)/ballast up

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The peers (taskiq, DBOS) get a virtualenv of their own: their dependencies must not
# change what Ballast's own processes import.
$(PEERS)/.installed: pyproject.toml constraints.txt
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	touch $@

bench: $(STAMP) $(PEERS)/.installed
	BALLAST_BENCH_PEERS_PYTHON=$(PEERS)/bin/python $(BIN)/python -m bench

schema: $(STAMP)
	$(BIN)/ballast schema export

clean:
	rm -rf $(VENV) $(PEERS) .ballast .mypy_cache .pytest_cache .ruff_cache

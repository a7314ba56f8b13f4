# Two commands for a fresh machine with Python 3.11+ and make:
#   make run   - the demo: embedded NATS + SQLite, one task through agents, tools and the outbox
#   make test  - lint (ruff), types (mypy) and the test suite (real nats-server, SQLite, PostgreSQL)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

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

bench: $(STAMP)
	$(BIN)/python -m bench

schema: $(STAMP)
	$(BIN)/ballast schema export

clean:
	rm -rf $(VENV) .ballast .mypy_cache .pytest_cache .ruff_cache

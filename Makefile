# Two commands do all the set-up on a fresh machine: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DBCTL := $(BIN)/dbctl
STAMP := $(VENV)/.installed

.PHONY: up down test install status migrate verify clean help

help:
	@echo "make up      start PostgreSQL (local, or Tilt when present), migrate, verify, show status"
	@echo "make down    stop what make up started (data is kept)"
	@echo "make test    run the whole test suite against a PostgreSQL it starts itself"
	@echo "make status  dbctl status against the local database"

$(STAMP): pyproject.toml
	./scripts/install-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(DBCTL) local up

down: install
	$(DBCTL) local stop

status: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) status

migrate: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) migrate

verify: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) verify

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

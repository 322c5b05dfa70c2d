# Two commands do all the set-up on a fresh machine: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DBCTL := $(BIN)/dbctl
STAMP := $(VENV)/.installed

.PHONY: up down test peers install status migrate verify seed reset clean help bench soak images cluster cluster-down screenshots

# The cluster of `make cluster`, when it runs and no other kubeconfig was chosen: `make up` then uses it.
ifeq ($(origin KUBECONFIG),undefined)
ifneq ($(wildcard build/cluster/state/kube-apiserver.pid),)
export KUBECONFIG := $(CURDIR)/build/cluster/kubeconfig
endif
endif
# The Tilt that `make peers` builds, when there is no other on PATH.
export PATH := $(PATH)$(if $(wildcard build/bin/tilt),:$(CURDIR)/build/bin)

help:
	@echo "make up      start PostgreSQL (local, or Tilt when present), migrate, verify, show status"
	@echo "make down    stop what make up started (data is kept)"
	@echo "make test    run the whole test suite against a PostgreSQL it starts itself"
	@echo "make status  dbctl status against the local database"
	@echo "make seed    load the development data (REFRESH=1 restores hand-edited seed rows)"
	@echo "make reset   drop, re-create, migrate and seed the local database (asks; YES=1 skips the question)"
	@echo "make bench   dbctl beside dbmate, yoyo, sqitch and psql, then the pods' commands under 100m and 1 CPU (~20 min)"
	@echo "make soak    the fault suite, larger: 500 SIGKILL runs, 40 concurrent runners (SOAK_RUNS=...)"
	@echo "make images  start the container engine and build the images k8s/dev names, offline (cached)"
	@echo "make cluster build (once, ~10 min) and start a single-node Kubernetes here, with the images loaded"
	@echo "make cluster-down  stop it (its data is kept; scripts/cluster wipe deletes it)"
	@echo "make screenshots  refresh docs/*.png: the browser test of Tilt's web UI takes them"

$(STAMP): pyproject.toml
	./scripts/install-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(DBCTL) dev up

down: install
	$(DBCTL) dev down

status: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) status

migrate: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) migrate

verify: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) verify

seed: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) seed $(if $(REFRESH),--refresh)

# Asks for the database name on a terminal; `make reset YES=1` passes --yes.
reset: install
	DATABASE_URL="$$($(DBCTL) local url --show-password)" $(DBCTL) reset --seed $(if $(YES),--yes)

# The real peers the tests run against, each built once and cached under build/ (ignored):
# Tilt from the Go module proxy, and sqlx's Migrator from crates.io.
peers: install
	scripts/build-tilt
	scripts/cluster build
	cargo build --quiet --locked --manifest-path tests/sqlx_oracle/Cargo.toml --target-dir build/sqlx-oracle

test: install peers
	$(BIN)/pytest $(PYTEST_ARGS)

# The README's pictures of Tilt's web UI, taken by its browser test (tests/test_tilt_ui.py) into docs/.
screenshots: install
	scripts/build-tilt
	DBCTL_SCREENSHOTS=$(CURDIR)/docs $(BIN)/pytest -p no:cacheprovider tests/test_tilt_ui.py

# Not part of `make test` or CI: it installs peers (npm, Debian, PyPI into bench/.venv) and takes minutes.
bench: install
	bench/setup
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	bench/.venv/bin/python bench/chart.py
	$(BIN)/python bench/startup.py --modes pyc --cpu 100m
	$(BIN)/python bench/startup.py --modes pyc --cpu 1

SOAK_RUNS ?= 500
soak: install
	DBCTL_CRASH_RUNS=$(SOAK_RUNS) DBCTL_CRASH_MIGRATIONS=60 DBCTL_CONCURRENT_RUNNERS=40 \
		$(BIN)/pytest -p no:cacheprovider --timeout 7200 tests/test_crash.py tests/test_concurrency.py tests/test_bad_input.py

# The tests' app_images fixture does the same itself; this is for Tilt, kubectl or a benchmark by hand.
images: install
	./scripts/container-engine
	PYTHON=$(BIN)/python ./scripts/container-images

clean:
	rm -rf $(VENV) .pytest_cache

# A single-node Kubernetes on this machine (scripts/cluster), context kiro-local, kubeconfig in
# build/cluster/kubeconfig; `make up` then runs `tilt up` against it.
cluster: images
	scripts/cluster up
	scripts/cluster load postgres:16-bookworm redis:7-bookworm

cluster-down:
	scripts/cluster down

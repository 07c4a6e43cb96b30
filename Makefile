# costcontrol: `make run` (set-up + the whole app) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT
# Where `make run` serves, for the links in notifications (SITE_URL, if set, wins).
export COSTCONTROL_RUN_URL := http://127.0.0.1:$(PORT)

.PHONY: run test screenshots bench lint fmt venv focus-venv bootstrap migrate clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/base.txt requirements/prod.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

# The test-only reference (LiteLLM, whose price map is the shared price file): tests and bench only.
$(VENV)/.installed-litellm: $(VENV)/.installed requirements/litellm-ref.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/litellm-ref.txt
	touch $@

# The FOCUS 1.2 validator (focus-validator, which needs Python >= 3.12) in a virtualenv of its own:
# tests only (tests/finance/focus.py runs it on our FOCUS exports). Python 3.12 from pyenv if there, else PATH.
FOCUS_VENV := .venv-focus
PYTHON312 ?= $(or $(shell ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V | tail -1),$(shell command -v python3.12 2>/dev/null))

focus-venv: $(FOCUS_VENV)/.installed

$(FOCUS_VENV)/.installed: requirements/focus-validator.txt
	@test -n "$(PYTHON312)" || { echo "focus-venv: needs Python 3.12 (pyenv install 3.12, or set PYTHON312=/path/to/python3.12)"; exit 1; }
	test -x $(FOCUS_VENV)/bin/python || $(PYTHON312) -m venv $(FOCUS_VENV)
	$(FOCUS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/focus-validator.txt
	touch $@

## make run: install, migrate, bootstrap (prices, beat schedule, admin user), start web + worker + beat.
## make run DEMO=1: the same with 60 days of demo data first (never do that on a real ledger).
run: venv
	@mkdir -p var/celery
	$(PY) manage.py migrate --no-input
	$(PY) manage.py bootstrap
	@if [ "$(DEMO)" = "1" ]; then $(PY) manage.py seed_demo_data --days 60; fi
	@echo ""
	@echo "costcontrol admin: http://127.0.0.1:$(PORT)/admin/   (web, Celery worker and beat start below; Ctrl-C stops all)"
	@echo ""
	$(VENV)/bin/honcho start -f Procfile

## make test: the whole suite on SQLite, then on a PostgreSQL it starts itself.
test: venv $(VENV)/.installed-litellm $(FOCUS_VENV)/.installed
	bin/run-tests

## make screenshots: the browser walk of every screen alone (tests/browser, SQLite, headless Chromium),
## one full-page screenshot per screen in var/screenshots/ (COSTCONTROL_SCREENSHOTS=dir to change).
COSTCONTROL_SCREENSHOTS ?= var/screenshots
screenshots: venv
	@env -u DATABASE_URL COSTCONTROL_SCREENSHOTS=$(COSTCONTROL_SCREENSHOTS) $(PY) -m pytest tests/browser -q; \
	status=$$?; echo "screenshots: $(COSTCONTROL_SCREENSHOTS)/"; exit $$status

## make bench: every benchmark (not tests), each under its own throwaway PostgreSQL, then one table
## (medians, ratios to a reference measured in the same run, targets) also written to bench/latest.md.
## make bench QUICK=1: smaller ledgers and fewer samples, a smoke run (~8 min instead of ~20).
bench: venv
	$(PY) bench/run_all.py $(if $(filter 1,$(QUICK)),--quick,)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

fmt: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf var/celery

# The README's commands. `make test` is what CI runs (.ci/run); `make run` starts the portal.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
# Written after the Python packages are installed; redone when pyproject.toml changes (the name changed
# when the ML extra joined, so existing checkouts install it once).
STAMP := $(VENV)/.talkforge-installed-ml
TEST_SETTINGS := talkforge.settings.test

.PHONY: help install system-packages services test lint format run serve bench

help:
	@echo "make run      start the portal on http://127.0.0.1:8000/ (SQLite, local Redis, one worker)"
	@echo "make test     lint, Django checks and the pytest suite against PostgreSQL and Redis"
	@echo "make install  Debian packages, .venv and the Python packages (fast when done)"
	@echo "make serve    the web tier as production runs it (docker/web.sh; production settings from the env)"
	@echo "make bench    run every bench/*.py (one JSON line each)"
	@echo "make lint     ruff check and ruff format --check"
	@echo "make format   ruff format and ruff check --fix"

install: system-packages $(STAMP)

system-packages:
	@scripts/system_packages.sh

$(PY):
	python3 -m venv $(VENV)

# The project runs from its checkout (manage.py and pytest put the root on sys.path), so only its
# requirements are installed: no editable install, no talkforge.egg-info in the working tree.
# The ML extra (torch, whisper, coqui-tts) comes too: the chat tests load real Whisper and XTTS code
# (tiny random weights). The web tier alone installs without it (`pyproject_requirements.py` with no
# extra). torch comes from plain PyPI (CUDA wheels, ~7 GB, ~2 min the first time): PyTorch's CPU index
# (download.pytorch.org) is not reachable from the CI machines, and the same wheels serve GPU workers.
$(STAMP): pyproject.toml scripts/pyproject_requirements.py | $(PY)
	$(PY) scripts/pyproject_requirements.py dev ml > $(VENV)/requirements-dev.txt
	$(PY) -m pip install --quiet --upgrade-strategy only-if-needed -r $(VENV)/requirements-dev.txt
	touch $@

services:
	@scripts/services.sh

lint: install
	$(RUFF) check .
	$(RUFF) format --check .

format: install
	$(RUFF) format .
	$(RUFF) check --fix .

test: install services lint
	DJANGO_SETTINGS_MODULE=$(TEST_SETTINGS) $(PY) manage.py check
	DJANGO_SETTINGS_MODULE=$(TEST_SETTINGS) $(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest

run: install
	scripts/run.sh

# The web tier as production starts it: gunicorn with one uvicorn worker per core (docker/web.sh), production
# settings read from the environment (SECRET_KEY, DATABASE_URL, ALLOWED_HOSTS, …). `kill -HUP` the master
# for a graceful restart.
serve: install
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-talkforge.settings.production} PYTHON=$(PY) \
	  WEB_BIND=$${WEB_BIND:-127.0.0.1:8000} docker/web.sh

# Every benchmark runs even when one fails; the target fails if any did. Files named _*.py are helpers.
bench: install services
	@status=0; found=0; \
	for bench in bench/*.py; do \
	  case "$$(basename "$$bench")" in _*) continue ;; esac; \
	  [[ -f $$bench ]] || continue; \
	  found=1; echo "== $$bench" >&2; \
	  DJANGO_SETTINGS_MODULE=$(TEST_SETTINGS) PYTHONPATH=$(CURDIR) $(PY) "$$bench" || status=1; \
	done; \
	[[ $$found == 1 ]] || echo "No benchmarks in bench/." >&2; \
	exit $$status

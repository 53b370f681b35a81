# The two commands: `make dev` runs everything locally, `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# `make dev` runs moto here; without it the settings talk to AWS itself.
DEV_AWS_ENDPOINT_URL ?= http://127.0.0.1:9090

.PHONY: dev test lint install clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

dev: install
	mkdir -p var
	$(BIN)/python manage.py migrate --no-input
	PORT=$(PORT) AWS_ENDPOINT_URL=$(DEV_AWS_ENDPOINT_URL) $(BIN)/python manage.py devstack

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) var

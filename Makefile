# The two set-up commands of the README: `make train` and `make test`.
# Both create .venv with the exact tested stack (constraints.txt, CPU torch) on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: train test lint

$(VENV)/.installed: setup.cfg constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# Train the default agent (masked PPO on maskrl/Kart-v1); pass more flags with ARGS="...".
train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

# Lint, then the whole test-suite on 2 workers.
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2

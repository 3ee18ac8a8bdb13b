# Quickstart: `make run` (the main job) and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/rtsim run

demo: $(STAMP)
	$(BIN)/rtsim demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/rtsim bench sessions
	$(BIN)/rtsim toxiproxy --bench
	$(BIN)/python -m rtsim.simulator.vad

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# `make demo` and `make test` each create .venv on first use (Python 3.11 and nothing else needed).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Exactly this torch: its CPU wheel is available locally; a looser spec pulls a CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/coin.py
	$(BIN)/python examples/eight_schools.py
	$(BIN)/python examples/state_space.py
	$(BIN)/python examples/variational.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check ppl stdlib inference tests examples bench

# The peers (NumPyro, Pyro) come from the optional `bench` extra; torch stays as installed.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/nuts.py

clean:
	rm -rf $(VENV)

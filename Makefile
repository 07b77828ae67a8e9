# The whole set-up lives here: every target builds .venv from setup.py itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: sim test lint bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

sim: $(STAMP)
	$(BIN)/sdm_demo

test: $(STAMP)
	$(BIN)/ruff check sdm simulator tests bench
	$(BIN)/pytest

# Figures of README.md "Benchmarks": a table on stdout, the same as JSON in bench-results.json.
# BENCH_ARGS="--only reading" or "--skip NAME" runs a part.
bench: $(STAMP)
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m bench.run --json bench-results.json $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check sdm simulator tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# The whole set-up lives here: every target builds .venv from setup.py itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: sim test prepare lint bench clean

# constraints.txt pins what the tests ran with, so a fresh machine builds what CI tested.
$(STAMP): setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

sim: $(STAMP)
	$(BIN)/sdm_demo

# What the tests need outside Python (mosquitto, chromium, Node-RED): the tests only look for it.
prepare:
	.ci/prepare

test: $(STAMP) prepare
	$(BIN)/ruff check sdm simulator tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# Figures of README.md "Benchmarks": a table on stdout, the same as JSON in bench-results.json.
# BENCH_ARGS="--only reading" or "--skip NAME" runs a part.
bench: $(STAMP) prepare
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m bench.run --json bench-results.json $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check sdm simulator tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .tools build *.egg-info .pytest_cache .hypothesis

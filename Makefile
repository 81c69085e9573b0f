# Bootstrap a virtual environment (CPU torch pinned by constraints.txt) and run the common jobs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not gpu"

.PHONY: smoke test lint bench

$(BIN)/s2ap-bench: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, from the constraints file: a plain `torch` would pull the newest CUDA build
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

smoke: $(BIN)/s2ap-bench
	$(BIN)/s2ap-bench run digits-smoke --workers 2

test: $(BIN)/s2ap-bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/s2ap-bench
	$(BIN)/ruff check .

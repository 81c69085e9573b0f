# Bootstrap a virtual environment (CPU torch pinned by constraints.txt) and run the common jobs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not gpu"

.PHONY: smoke test test-quick test-slow lint bench

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

# the developer's loop: every test that takes at most a few seconds (about 2 minutes in all on 2 busy cores)
test-quick: $(BIN)/s2ap-bench
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

# the rest: real subprocesses, the browser, the guide in a fresh environment, the estimate against a run
test-slow: $(BIN)/s2ap-bench
	$(BIN)/python -m pytest -m "slow and not gpu" -q --durations=10

lint: $(BIN)/s2ap-bench
	$(BIN)/ruff check .

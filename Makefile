# Bootstrap a virtual environment (CPU torch pinned by constraints.txt) and run the common jobs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not gpu"
SMOKE_DIR ?= build/smoke
# pytest-benchmark: compare with the stored baseline (2-core CPU machine); a min time (CPU time, one thread)
# 40 % above it fails: run-to-run noise on the shared 2-core machine reaches about 30 %
BENCH_BASELINE ?= tests/benchmarks/baseline/cpu-2core.json
BENCH_ARGS ?= --benchmark-compare=$(BENCH_BASELINE) --benchmark-compare-fail=min:40%

.PHONY: smoke digits test test-quick test-slow test-bigmem lint docs bench

$(BIN)/s2ap-bench: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, from the constraints file: a plain `torch` would pull the newest CUDA build
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# A real, small suite computed from an empty folder, then a short summary: cells and time, the leaderboard with
# 95 % intervals, the +S2AP verdicts, the page it wrote (index.html) and the next command.
smoke: $(BIN)/s2ap-bench
	@rm -rf $(SMOKE_DIR)/digits-quick
	@$(BIN)/s2ap-bench run digits-quick --workers 2 --results-dir $(SMOKE_DIR) --no-progress --summary

# The full digits suite into results/ (cells whose committed results are up to date are skipped)
digits: $(BIN)/s2ap-bench
	$(BIN)/s2ap-bench run digits-smoke --workers 2

test: $(BIN)/s2ap-bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the developer's loop: every test that takes at most a few seconds (about 2 minutes in all on 2 busy cores)
test-quick: $(BIN)/s2ap-bench
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

# the rest: real subprocesses, the browser, the guide in a fresh environment, the estimate against a run
test-slow: $(BIN)/s2ap-bench
	$(BIN)/python -m pytest -m "slow and not gpu" -q --durations=10

# the pruning runs of full-size zoo models (WRN-28-10, ResNet50): 2-3 GB of memory, skipped by `make test`
test-bigmem: $(BIN)/s2ap-bench
	$(BIN)/python -m pytest -m "bigmem and not gpu" -q

lint: $(BIN)/s2ap-bench
	$(BIN)/ruff check .

# The documentation site (mkdocs.yml, docs/) into build/site/; --strict: a broken link or anchor fails it
docs: $(BIN)/s2ap-bench
	$(BIN)/mkdocs build --strict -d build/site

# Hot-path benchmarks (tests/benchmarks, not part of `make test`), one thread, each beside a bare-PyTorch twin
bench: $(BIN)/s2ap-bench
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/benchmarks --benchmark-enable --benchmark-timer=time.process_time \
		$(BENCH_ARGS)

# Every GPU check in one call, within 8 minutes, into results/gpu/<date>-<gpu>/ (scripts/gpu_check.py, docs/gpu.md).
# On a machine whose own python3 holds a CUDA build of torch:
#   make gpu-check GPU_PYTHON=python3 GPU_CHECK_ARGS="--out $OUT/gpu"
# The logic on this machine's CPU, in seconds: make gpu-check GPU_CHECK_ARGS="--device cpu --quick --out build/gpu"
GPU_PYTHON ?= $(BIN)/python
GPU_CARRY ?= build/gpu-carry
GPU_CHECK_ARGS ?=
.PHONY: gpu-check gpu-carry
gpu-check:
	PYTHONPATH="$(CURDIR):$(abspath $(GPU_CARRY))$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_PYTHON) scripts/gpu_check.py \
		$(GPU_CHECK_ARGS)

# What a GPU machine's image lacks, to travel with the working tree (build/ is ignored: name $(GPU_CARRY) in
# the device tool's carry): pyautoattack, pure Python, copied from the venv without its 43 MB of examples
gpu-carry:
	rm -rf $(GPU_CARRY) && mkdir -p $(GPU_CARRY)
	cp -r "$$($(BIN)/python -c 'import os, pyautoattack; print(os.path.dirname(pyautoattack.__file__))')" $(GPU_CARRY)/
	rm -rf $(GPU_CARRY)/pyautoattack/examples $(GPU_CARRY)/pyautoattack/__pycache__
	du -sh $(GPU_CARRY)

# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/chatops run

# mypy, then the suite under coverage.py with the `chatops` subprocesses measured too
# ([tool.coverage.run] patch), then the total in one line; below fail_under it fails.
test: $(STAMP)
	$(BIN)/python -m mypy
	rm -rf .chatops/coverage && mkdir -p .chatops/coverage
	$(BIN)/python -m coverage run -m pytest -q $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine -q
	@out=$$($(BIN)/python -m coverage report); status=$$?; echo "$$out" | \
	sed '1s|.*|coverage of bot/ channels/ agents/ (subprocesses included): &%|'; exit $$status

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# One table: our runtime against LangGraph (SQLite and in-memory), same machine, same run.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.replication

# The fault-injection test at full size (CI runs it smaller as part of `make test`).
chaos: $(STAMP)
	CHATOPS_CHAOS_THREADS=$${CHATOPS_CHAOS_THREADS:-200} $(BIN)/python -m pytest -q -s -m chaos -p no:cacheprovider --timeout 900

clean:
	rm -rf $(VENV) .chatops .pytest_cache

# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test coverage bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/chatops run

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The suite under coverage.py, the `chatops` subprocesses included ([tool.coverage.run] patch),
# total in one line. Not part of `make test`: it makes the suite about a third slower.
coverage: $(STAMP)
	rm -rf .chatops/coverage && mkdir -p .chatops/coverage
	$(BIN)/python -m coverage run -m pytest -q
	$(BIN)/python -m coverage combine -q
	@echo "coverage of bot/ channels/ agents/ (subprocesses included): $$($(BIN)/python -m coverage report)%"

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

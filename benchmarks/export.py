"""Preference export at scale: a generated run store with 1,000,000 per-example evaluations.

Run: ``python benchmarks/export.py [--sets 250] [--variants 4] [--examples 1000]
[--max-per-input 10] [--keep DIR]``.

The store looks like an exemplar search with calibration on a two-label task:
``sets`` exemplar sets, each scored with ``variants`` calibrations that reuse its
requests (so ``sets * examples`` recorded requests), on ``examples`` inputs:
``sets * variants * examples`` evaluations, written in one transaction straight
into a store made by ``RunStore.create`` (its schema, its triggers). Answers are
drawn from a seeded ``random.Random``, so every run of the benchmark builds the
same store.

The export is ``promptopt export dpo`` run as its own process (what a user runs),
timed from start to exit; ``peak_mb`` is that process's peak resident memory and
``cpu_seconds`` its user + system time (``getrusage(RUSAGE_CHILDREN)``; on a shared
machine the wall time also counts waiting for a CPU). The last line printed is JSON
with ``evaluations``, ``pairs``, ``seconds``, ``cpu_seconds``, ``peak_mb``,
``pairs_per_s`` and ``generate_seconds``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from promptopt.store import RUN_FILE, RunStore

SYSTEM = "Is this product review positive or negative? Reply with one word."
LABELS = ("positive", "negative")
WORDS = {"positive": "lovely sturdy well made", "negative": "flimsy broke in a week"}


def review(n: int) -> tuple[str, str]:
    label = LABELS[n % 2]
    return f"Review {n}: the item was {WORDS[label]}, order {n * 7919 % 100003}.", label


def request_json(shown: int, text: str) -> str:
    exemplar, label = review(shown)
    messages = [["system", SYSTEM], ["user", exemplar], ["assistant", label], ["user", text]]
    return json.dumps({"messages": messages, "model": "SmolLM2-135M-Instruct", "temperature": 0.0,
                       "max_tokens": 4, "stop": [], "seed": None, "n": 1,
                       "choices": list(LABELS)}, sort_keys=True)  # fmt: skip


def generate(folder: Path, *, sets: int, variants: int, examples: int) -> Path:
    """A run store with ``sets * variants * examples`` evaluations; returns its folder."""
    with RunStore.create(folder, task={"name": "reviews-bench"}, run_id="bench") as store:
        root = store.root
    rng = random.Random(0)
    conn = sqlite3.connect(root / RUN_FILE, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    candidates = [(f"set{s:04d}-cal{v}", s) for s in range(sets) for v in range(variants)]
    conn.executemany(
        "INSERT INTO candidates (id, params, parent_id, step, origin, meta, created_at)"
        " VALUES (?, ?, NULL, 1, 'exemplars', '{}', 0)",
        ((c, json.dumps({"exemplars": [s], "calibration": c[-1]})) for c, s in candidates),
    )
    texts = [review(n) for n in range(examples)]
    keys = {}
    calls: list[tuple[str, str, str]] = []

    def flush_calls() -> None:
        conn.executemany(
            "INSERT INTO llm_calls (key, provider, model, tag, request, response)"
            " VALUES (?, 'local', 'SmolLM2-135M-Instruct', 'task', ?, ?)",
            calls,
        )
        calls.clear()

    for s in range(sets):
        for n, (text, _) in enumerate(texts):
            key = hashlib.sha256(f"{s}/{n}".encode()).hexdigest()
            keys[s, n] = key
            answer = LABELS[rng.random() < 0.5]
            calls.append((key, request_json(s + examples, text), json.dumps({"text": answer})))
        flush_calls()

    def evaluations() -> Iterator[tuple]:
        for candidate, s in candidates:
            for n, (text, label) in enumerate(texts):
                output = label if rng.random() < 0.6 else LABELS[label == "positive"]
                yield (candidate, str(n), json.dumps({"text": text}), json.dumps(label), output,
                       float(output == label), keys[s, n])  # fmt: skip

    conn.executemany(
        "INSERT INTO evaluations (candidate_id, split, example_id, inputs, target, output, score,"
        " valid, feedback, error, request_key, created_at)"
        " VALUES (?, 'val', ?, ?, ?, ?, ?, 1, '', NULL, ?, 0)",
        evaluations(),
    )
    conn.execute("COMMIT")
    conn.close()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=250)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--max-per-input", type=int, default=10)
    parser.add_argument("--keep", metavar="DIR", help="build the store here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="promptopt-bench-export-") as tmp:
        folder = Path(args.keep or tmp)
        started = time.perf_counter()
        root = generate(folder, sets=args.sets, variants=args.variants, examples=args.examples)
        generated = time.perf_counter() - started
        total = args.sets * args.variants * args.examples
        out = Path(tmp) / "pairs.jsonl"
        command = [sys.executable, "-m", "promptopt.cli", "export", "dpo", str(root), "-o",
                   str(out), "--max-per-input", str(args.max_per_input)]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb, cpu = child.ru_maxrss / 1024, child.ru_utime + child.ru_stime
        with out.open(encoding="utf-8") as lines:
            pairs = sum(1 for _ in lines)
        size_mb = out.stat().st_size / 2**20
    print(done.stdout.strip())
    print(f"{'evaluations':<22}{total:>14,}")
    print(f"{'store generated in':<22}{generated:>13.1f}s")
    print(f"{'pairs written':<22}{pairs:>14,}  ({size_mb:.1f} MB)")
    print(f"{'export wall time':<22}{seconds:>13.1f}s")
    print(f"{'export CPU time':<22}{cpu:>13.1f}s  (wall time includes waiting for a CPU)")
    print(f"{'export peak memory':<22}{peak_mb:>11.0f} MB")
    print(f"{'pairs per second':<22}{pairs / seconds:>14,.0f}")
    result = {"evaluations": total, "pairs": pairs, "seconds": round(seconds, 2),
              "cpu_seconds": round(cpu, 2),
              "peak_mb": round(peak_mb, 1), "pairs_per_s": round(pairs / seconds, 1),
              "generate_seconds": round(generated, 2)}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()

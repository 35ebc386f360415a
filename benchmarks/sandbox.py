"""Sandbox cost per call: isolated and opted-out workers against an in-process call.

Run: ``python benchmarks/sandbox.py [--calls 200] [--warmup 10]``.

One small proposed function (keyword rules over a message, like the triage
example's ``route``) is called ``calls`` times, one call at a time, through

- ``namespaces``: the default sandbox (bubblewrap namespaces, seccomp, Landlock,
  a child forked from the warm worker per call), when this machine has it;
- ``none``: the opted-out sandbox (the same worker, no isolation);
- ``in-process``: the same source compiled once and called directly.

It also times the first call of a fresh sandbox (starting the worker), a cost
paid once per run. Timings are wall-clock per call; p50 and p95 are over the
timed calls after ``warmup``. The last line printed is JSON with ``p50_ms`` and
``p95_ms`` (the isolated sandbox, or the opted-out one where isolation is
missing), ``isolation``, ``start_ms``, ``none_p50_ms``, ``none_p95_ms`` and
``in_process_p50_us``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from promptopt.sandbox import Sandbox
from promptopt.sandbox.isolation import isolation_problem

SOURCE = """
def route(team, message):
    text = message.lower()
    rules = [(("refund", "invoice"), "billing"), (("package", "courier"), "shipping"),
             (("password", "login"), "account"), (("error", "crash"), "technical")]
    for words, chosen in rules:
        if any(word in text for word in words):
            return chosen
    return team
"""
ARGS = ["technical", "I was charged twice, please refund the invoice"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_sandbox(isolation: str, *, calls: int, warmup: int) -> dict[str, float]:
    with Sandbox(timeout_s=10, isolation=isolation) as box:
        started = time.perf_counter()
        first = box.run(SOURCE, "route", ARGS)
        start_ms = (time.perf_counter() - started) * 1000
        assert first.ok and first.value == "billing", first
        times = []
        for i in range(warmup + calls):
            started = time.perf_counter()
            result = box.run(SOURCE, "route", ARGS)
            elapsed = (time.perf_counter() - started) * 1000
            assert result.ok, result
            if i >= warmup:
                times.append(elapsed)
    return {
        "start_ms": start_ms,
        "p50_ms": statistics.median(times),
        "p95_ms": percentile(times, 0.95),
    }


def time_in_process(calls: int) -> float:
    namespace: dict = {}
    exec(compile(SOURCE, "<candidate>", "exec"), namespace)
    route = namespace["route"]
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        route(*ARGS)
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    problem = isolation_problem()
    rows = {}
    if problem is None:
        rows["namespaces"] = time_sandbox("namespaces", calls=args.calls, warmup=args.warmup)
    else:
        print(f"isolation unavailable here ({problem}); timing the opted-out sandbox only")
    rows["none"] = time_sandbox("none", calls=args.calls, warmup=args.warmup)
    in_process_us = time_in_process(max(args.calls, 1000))
    print(f"{'runner':<12} {'start ms':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for name, row in rows.items():
        print(f"{name:<12} {row['start_ms']:>9.1f} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f}")
    print(f"{'in-process':<12} {'-':>9} {in_process_us / 1000:>8.4f} {'-':>8}")
    main_row = rows.get("namespaces", rows["none"])
    figures = {
        "isolation": "namespaces" if problem is None else "none",
        "p50_ms": round(main_row["p50_ms"], 3),
        "p95_ms": round(main_row["p95_ms"], 3),
        "start_ms": round(main_row["start_ms"], 1),
        "none_p50_ms": round(rows["none"]["p50_ms"], 3),
        "none_p95_ms": round(rows["none"]["p95_ms"], 3),
        "in_process_p50_us": round(in_process_us, 3),
        "calls": args.calls,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

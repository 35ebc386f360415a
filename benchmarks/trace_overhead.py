"""Trace overhead: promptopt's traced graph vs microsoft/Trace (``trace-opt``) vs plain calls.

Run: ``python benchmarks/trace_overhead.py [--n 20000] [--repeats 5] [--mem-n 5000]``.

The same 3-op workflow (``x -> a(x, instruction) -> b -> c``, ``instruction`` a
trainable parameter) runs ``n`` times, one trace per run, under promptopt, under
Trace (``opto.trace.bundle``; pip-installed here if ``import opto`` fails) and as
plain function calls. Time per op is the best of ``repeats`` timed loops divided
by ``runs * 3``, the contenders interleaved so machine noise hits them alike; Trace,
40-100x slower, does ``n // 10`` runs per loop (its global graph is cleared between
loops). No allocation tracing is on while timing. Memory retained per op is
measured in a separate pass under ``tracemalloc``: ``mem-n`` runs whose traces are
all kept alive, growth of traced memory divided by ``mem-n * 3``. The last line
printed is JSON with ``us_per_op``, ``trace_us_per_op``, ``plain_us_per_op``,
``speedup_vs_trace``, ``bytes_per_op``, ``trace_bytes_per_op`` and
``memory_ratio_vs_trace``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from promptopt.graph import node, param, trace

TRACE_OPT = "trace-opt==0.1.3.8"
OPS = 3


def ensure_trace_opt() -> None:
    """Install microsoft/Trace's PyPI package if it is missing."""
    try:
        import opto.trace  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", TRACE_OPT], check=True)


# -- the workflow, three ways ---------------------------------------------------------------


def plain_a(x: str, instruction: str) -> str:
    return x + " / " + instruction


def plain_b(y: str) -> str:
    return y.upper()


def plain_c(z: str) -> str:
    return z[::-1]


INSTRUCTION = param("Answer in one word.", name="instruction")
a = node(plain_a)
b = node(plain_b)
c = node(plain_c)


def run_plain(x: str) -> Any:
    return plain_c(plain_b(plain_a(x, INSTRUCTION.peek())))


def run_promptopt(x: str) -> Any:
    with trace() as t:
        c(b(a(x, INSTRUCTION.value)))
    return t


def trace_workflow() -> tuple[Callable[[str], Any], Callable[[], None]]:
    """Trace's version of the workflow, and a function that clears Trace's global graph."""
    from opto.trace import bundle
    from opto.trace import node as trace_node
    from opto.trace.nodes import GRAPH

    instruction = trace_node("Answer in one word.", trainable=True)
    ta, tb, tc = bundle()(plain_a), bundle()(plain_b), bundle()(plain_c)

    def run_trace(x: str) -> Any:
        return tc(tb(ta(x, instruction)))

    return run_trace, GRAPH.clear


# -- measuring ------------------------------------------------------------------------------


def time_per_op(
    run: Callable[[str], Any], *, n: int, repeats: int, reset: Callable[[], None]
) -> float:
    """Best-of-``repeats`` microseconds per op over ``n`` runs (no allocation tracing)."""
    best = float("inf")
    for _ in range(repeats):
        reset()
        gc.collect()
        x = "What is the capital of France?"
        start = time.perf_counter()
        for _ in range(n):
            run(x)
        best = min(best, time.perf_counter() - start)
    reset()
    return best / (n * OPS) * 1e6


def bytes_per_op(run: Callable[[str], Any], *, n: int, reset: Callable[[], None]) -> float:
    """Memory retained per op when ``n`` runs' traces are all kept alive."""
    reset()
    gc.collect()
    x = "What is the capital of France?"
    run(x)  # warm caches (names, code objects) outside the measurement
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        kept = [run(x) for _ in range(n)]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    reset()
    return (after - before) / (n * OPS)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="workflow runs per timed loop")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops (the best is kept)")
    parser.add_argument("--mem-n", type=int, default=5_000, help="runs kept alive for memory")
    args = parser.parse_args(argv)
    ensure_trace_opt()
    run_trace, clear_trace = trace_workflow()
    nothing: Callable[[], None] = lambda: None  # noqa: E731

    # interleave the contenders so machine noise hits them alike
    us = {"promptopt": float("inf"), "trace": float("inf"), "plain": float("inf")}
    runs = {"promptopt": (run_promptopt, nothing), "trace": (run_trace, clear_trace),
            "plain": (run_plain, nothing)}  # fmt: skip
    for _ in range(args.repeats):
        for name, (run, reset) in runs.items():
            n = args.n if name != "trace" else max(1, args.n // 10)
            us[name] = min(us[name], time_per_op(run, n=n, repeats=1, reset=reset))
    mem = {
        "promptopt": bytes_per_op(run_promptopt, n=args.mem_n, reset=nothing),
        "trace": bytes_per_op(run_trace, n=args.mem_n, reset=clear_trace),
    }
    result = {
        "us_per_op": round(us["promptopt"], 3),
        "trace_us_per_op": round(us["trace"], 3),
        "plain_us_per_op": round(us["plain"], 3),
        "speedup_vs_trace": round(us["trace"] / us["promptopt"], 1),
        "bytes_per_op": round(mem["promptopt"], 1),
        "trace_bytes_per_op": round(mem["trace"], 1),
        "memory_ratio_vs_trace": round(mem["promptopt"] / mem["trace"], 3),
    }
    print(f"{'':<12}{'us/op':>10}{'bytes/op':>12}")
    print(f"{'promptopt':<12}{us['promptopt']:>10.3f}{mem['promptopt']:>12.1f}")
    print(f"{'Trace':<12}{us['trace']:>10.3f}{mem['trace']:>12.1f}")
    print(f"{'plain':<12}{us['plain']:>10.3f}{'-':>12}")
    print(
        f"promptopt is {result['speedup_vs_trace']}x faster than Trace and retains "
        f"{result['memory_ratio_vs_trace']:.2f}x its memory per op "
        f"({us['promptopt'] / us['plain']:.1f}x a plain call)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

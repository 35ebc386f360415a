"""The end-of-run summary shows what the optimizer model spent, apart from the task model."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from promptopt.report.summary import print_summary


def run_result(**fields: object) -> SimpleNamespace:
    """What print_summary reads of an OptimizeResult, with ``fields`` changed."""
    return SimpleNamespace(**{
        "run_id": "r1",
        "scores": {"seed_val": 0.5, "best_val": 0.7, "seed_test": 0.4, "best_test": 0.6},
        "invalid": {"seed_test": 0, "best_test": 0},
        "usage": {},
        "test_usage": {},
        "steps": 4,
        "stopped": "max_steps",
        "wall_s": 12.0,
        "best_prompt_path": Path("traces/r1/best_prompt.txt"),
        **fields,
    })  # fmt: skip


def test_summary_counts_optimizer_calls_and_tokens() -> None:
    usage = {"calls": 40, "cache_hits": 2, "prompt_tokens": 9000, "completion_tokens": 300}
    result = run_result(
        usage=usage,
        test_usage={"calls": 10},
        optimizer_usage={"calls": 4, "prompt_tokens": 2100, "completion_tokens": 250},
    )
    out = io.StringIO()
    print_summary(result, Console(file=out, width=120))
    rows = {
        cells[0]: cells[1:]
        for line in out.getvalue().splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 3
    }
    assert rows["optimizer model calls"] == ["4", "-"]
    assert rows["optimizer tokens (prompt + completion)"] == ["2100 + 250", "-"]
    assert rows["tokens"] == ["9300", "0"]  # every role's tokens, as before


def test_summary_gives_each_models_speed_while_busy() -> None:
    result = SimpleNamespace(
        run_id="r2",
        scores={"seed_val": 0.5, "best_val": 0.7, "seed_test": None, "best_test": None},
        invalid={"seed_test": None, "best_test": None},
        usage={"calls": 104},
        test_usage={},
        task_usage={"calls": 100, "prompt_tokens": 6000, "completion_tokens": 200, "busy_s": 20.0},
        optimizer_usage={
            "calls": 4,
            "prompt_tokens": 900,
            "completion_tokens": 100,
            "busy_s": 50.0,
        },
        steps=2,
        stopped="max_steps",
        wall_s=70.0,
        best_prompt_path=Path("traces/r2/best_prompt.txt"),
    )
    out = io.StringIO()
    print_summary(result, Console(file=out, width=200))
    (line,) = [x for x in out.getvalue().splitlines() if x.startswith("model speed while busy")]
    assert line == (
        "model speed while busy: task 5.00 calls/s, 310 tokens/s (20 s busy); "
        "optimizer 0.08 calls/s, 20 tokens/s (50 s busy)"
    )
    result.optimizer_usage = result.task_usage  # one model in both roles: said once
    out = io.StringIO()
    print_summary(result, Console(file=out, width=200))
    assert "optimizer" not in [x for x in out.getvalue().splitlines() if "busy" in x][0]

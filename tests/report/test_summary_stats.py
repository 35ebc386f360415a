"""The end-of-run summary shows what the optimizer counted, no-op replies included."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from promptopt.report.summary import print_summary


def _result(**stats: int) -> SimpleNamespace:
    scores = {"seed_val": 0.5, "best_val": 1.0, "seed_test": None, "best_test": None}
    return SimpleNamespace(
        run_id="r", scores=scores, invalid={"seed_test": None, "best_test": None}, usage={},
        test_usage={}, steps=3, stopped="optimizer finished", wall_s=1.0,
        best_prompt_path=Path("best_prompt.txt"), optimizer_stats=stats,
    )  # fmt: skip


def _printed(result: SimpleNamespace) -> str:
    out = io.StringIO()
    print_summary(result, Console(file=out, width=200))
    return out.getvalue()


def test_the_summary_counts_no_op_replies():
    text = _printed(_result(calls=5, noops=2, unreadable_votes=1))
    assert "optimizer: calls 5, no-op replies 2, unreadable votes 1" in text


def test_no_optimizer_line_when_nothing_was_counted():
    assert "optimizer:" not in _printed(_result())

"""The end-of-run summary shows what the optimizer counted, no-op replies included."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from promptopt.report.summary import print_summary


def result(**extra):
    scores = {"seed_val": 0.5, "best_val": 0.8, "seed_test": 0.5, "best_test": 0.7}
    invalid = {"seed_test": 0, "best_test": 0}
    return SimpleNamespace(run_id="r", scores=scores, invalid=invalid, usage={}, test_usage={},
                           optimizer_usage={"calls": 8, "prompt_tokens": 900,
                                            "completion_tokens": 120},
                           steps=3, stopped="optimizer finished", wall_s=1.0,
                           best_prompt_path=Path("best_prompt.txt"), **extra)  # fmt: skip


def printed(res) -> str:
    out = io.StringIO()
    print_summary(res, Console(file=out, width=200))
    return out.getvalue()


def test_the_summary_counts_noop_replies():
    text = printed(result(optimizer_stats={"calls": 8, "noops": 2, "request_errors": 0}))
    assert "optimizer: calls 8, no-op replies 2, request errors 0" in text
    assert "900 + 120" in text  # the optimizer model's prompt and completion tokens


def test_no_stats_no_line():
    assert "optimizer:" not in printed(result(optimizer_stats={}))

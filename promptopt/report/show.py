"""``promptopt show RUN``: a run's essentials in the terminal, from the same facts as the report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from promptopt.report.facts import RunFacts
from promptopt.report.numbers import score_text
from promptopt.report.summary import print_comparison, stage_line
from promptopt.text import clip

__all__ = ["print_run"]

_SHOWN_CHARS = 400


def print_run(facts: RunFacts, console: Console | None = None) -> None:
    console = console or Console()
    console.print(
        f"run [bold]{facts.run_id}[/bold]  task {facts.task_name}  optimizer "
        f"{facts.optimizer or '-'}  status {facts.status}  started {facts.created_at}"
    )
    seed, best = facts.seed, facts.best
    scores = Table(show_header=True)
    for column in ("", "seed", "best"):
        scores.add_column(column, justify="right" if column else "left")
    scores.add_row(
        "validation",
        score_text(None if seed is None else seed.val),
        score_text(None if best is None else best.val),
    )
    scores.add_row(
        f"test ({facts.test_rows} rows)",
        score_text(None if seed is None else seed.test),
        score_text(None if best is None else best.test),
    )
    console.print(scores)
    print_comparison(facts.comparison, console)
    won = sum(1 for e in facts.examples if e.won)
    partial = sum(1 for c in facts.candidates if c.partial)
    console.print(
        f"{len(facts.candidates)} candidates"
        + (f" ({partial} partial: scored on part of validation)" if partial else "")
        + f"; on test the best won {won} and lost {len(facts.examples) - won} examples "
        "against the seed"
    )
    for stage in facts.stages:  # each stage's share, spending, and why it ended early
        console.print(stage_line(stage, numbered=len(facts.stages) > 1), soft_wrap=True,
                      highlight=False)  # fmt: skip
    costs = Table(title="cost")
    for column in ("model", "role", "paid", "replayed", "failed", "tokens", "US$"):
        costs.add_column(column)
    for c in facts.costs:
        costs.add_row(c.model, c.tag, str(c.paid), str(c.replayed), str(c.failed),
                      str(c.prompt_tokens + c.completion_tokens), f"{c.usd:.4f}")  # fmt: skip
    console.print(costs)
    if best is not None and seed is not None:
        for name, value in best.params.items():
            if seed.params.get(name) != value:
                text = value if isinstance(value, str) else repr(value)
                cut = clip(text, _SHOWN_CHARS, marker=" …")
                console.print(
                    f"[bold]{name}[/bold] (changed):\n{cut}", markup=True, highlight=False
                )

"""Terminal tables: the dry-run plan, the end-of-run summary, an evaluation, the list of runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from promptopt.report.numbers import score_text
from promptopt.stats import Comparison

__all__ = [
    "print_comparison",
    "print_eval",
    "print_plan",
    "print_runs",
    "print_summary",
    "stage_line",
]


# "noop": how MCTS and OPRO named the count in runs recorded before it became "noops"
_STAT_NAMES = {"noops": "no-op replies", "noop": "no-op replies",
               "cut_off": "replies cut off at max_tokens",
               "repeats_cut": "versions read without their repeated lines"}  # fmt: skip


def print_plan(plan: Any, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="dry run: nothing will be spent", show_header=False)
    for name, value in plan.rows:
        table.add_row(name, value)
    console.print(table)


def print_summary(result: Any, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"run {result.run_id}")
    table.add_column("")
    table.add_column("seed", justify="right")
    table.add_column("best", justify="right")
    s = result.scores
    table.add_row("validation accuracy", score_text(s["seed_val"]), score_text(s["best_val"]))
    table.add_row("test accuracy", score_text(s["seed_test"]), score_text(s["best_test"]))
    inv = result.invalid
    table.add_row(
        "unparseable test outputs",
        str(inv["seed_test"] if inv["seed_test"] is not None else "-"),
        str(inv["best_test"] if inv["best_test"] is not None else "-"),
    )
    console.print(table)
    print_comparison(getattr(result, "comparison", None), console)
    u, t = result.usage, result.test_usage
    usage = Table(show_header=True)
    for col in ("", "optimization", "test scoring"):
        usage.add_column(col, justify="right" if col else "left")
    usage.add_row("model calls", str(u.get("calls", 0)), str(t.get("calls", 0)))
    usage.add_row("cached or replayed", str(u.get("cache_hits", 0)), str(t.get("cache_hits", 0)))
    usage.add_row(
        "tokens",
        str(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)),
        str(t.get("prompt_tokens", 0) + t.get("completion_tokens", 0)),
    )
    o = getattr(result, "optimizer_usage", None) or {}
    usage.add_row("optimizer model calls", str(o.get("calls", 0)), "-")
    usage.add_row(
        "optimizer tokens (prompt + completion)",
        f"{o.get('prompt_tokens', 0)} + {o.get('completion_tokens', 0)}",
        "-",
    )
    usage.add_row("cost (USD)", f"{u.get('cost_usd', 0.0):.4f}", f"{t.get('cost_usd', 0.0):.4f}")
    console.print(usage)
    console.print(f"steps: {result.steps} ({result.stopped}); wall time {result.wall_s:.1f} s")
    speeds = model_speeds(result)
    if speeds:
        console.print(f"model speed while busy: {'; '.join(speeds)}", soft_wrap=True)
    stats = getattr(result, "optimizer_stats", None) or {}
    if stats:  # what the optimizer counted of its model's replies: no-op replies among them
        said = ", ".join(f"{_STAT_NAMES.get(k, k.replace('_', ' '))} {v}" for k, v in stats.items())
        console.print(f"optimizer: {said}", soft_wrap=True)
    stages = getattr(result, "stages", ()) or ()
    for stage in stages:
        console.print(stage_line(stage, numbered=len(stages) > 1), soft_wrap=True, highlight=False)
    console.print(
        f"seed test accuracy: {score_text(s['seed_test'])}   best test accuracy: {score_text(s['best_test'])}"
    )
    console.print(f"best prompt written to {result.best_prompt_path}", soft_wrap=True)


def print_comparison(comparison: Comparison | None, console: Console) -> None:
    """The best against the seed and the majority class on test, then what that says in words."""
    if comparison is None:
        return
    for line in comparison.lines():
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    for verdict in comparison.verdicts():  # labels are data: escaped, never read as markup
        console.print(f"[bold]note:[/bold] {escape(verdict)}", soft_wrap=True, highlight=False)


def stage_line(stage: Mapping[str, Any], *, numbered: bool = True) -> str:
    """``stage 2 exemplars: 2 candidates in 1 step (4 planned), 150 of its 160 calls; ended
    early: its share of the budget was spent`` (see ``OptimizeResult.stages``)."""
    name = f"stage {stage['stage'] + 1} {stage['optimizer']}" if numbered else stage["optimizer"]
    steps, planned = stage["steps"], stage["planned_steps"]
    said = (f"{name}: {stage['candidates']} candidate{'s' if stage['candidates'] != 1 else ''} "
            f"scored in {steps} step{'s' if steps != 1 else ''} ({planned} planned)")  # fmt: skip
    if stage.get("free"):  # calibrations: answers re-read from the run, no call
        said += f", {stage['free']} of them free re-readings"
    if stage.get("dropped"):
        said += f", {stage['dropped']} more dropped by racing"
    if stage.get("share") is not None:
        said += f"; {stage['spent']} of its {stage['share']} calls"
    if stage.get("ended_early"):
        said += f"; ended early: {stage['ended_early']}"
    return said


def model_speeds(result: Any) -> list[str]:
    """``task 5.1 calls/s, 330 tokens/s (40 s busy)`` per model role that made calls."""
    roles = [("task", getattr(result, "task_usage", None)),
             ("optimizer", getattr(result, "optimizer_usage", None))]  # fmt: skip
    out, seen = [], []
    for role, usage in roles:
        usage = usage or {}
        busy, calls = float(usage.get("busy_s", 0.0)), int(usage.get("calls", 0))
        if busy <= 0 or calls == 0 or usage in seen:  # one model in both roles: said once
            continue
        seen.append(usage)
        tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        out.append(f"{role} {calls / busy:.2f} calls/s, {tokens / busy:.0f} tokens/s "
                   f"({busy:.0f} s busy)")  # fmt: skip
    return out


def print_eval(report: Any, console: Console | None = None) -> None:
    console = console or Console()
    console.print(
        f"{report.label} on {report.split} ({report.n} examples): "
        f"accuracy {score_text(report.score)}, unparseable {report.invalid}, errors {report.errors}, "
        f"model calls {report.calls}, cache hits {report.cache_hits}"
    )


def print_runs(runs: Sequence[Any], console: Console | None = None) -> None:
    console = console or Console()
    if not runs:
        console.print("no runs yet")
        return
    table = Table()
    for col in ("run (starts with its UTC time)", "task", "status", "calls", "best val"):
        table.add_column(col, no_wrap=True)
    for run in runs:
        best = getattr(run, "best_score", None)
        table.add_row(
            run.run_id,
            str(run.task_name),
            str(run.status),
            str(getattr(run, "calls", "")),
            score_text(best),
        )
    console.print(table)

"""``promptopt graph RUN``: one stored trace of a run drawn to a file.

The drawing is :mod:`promptopt.graph.render`'s; this reads the trace from the
run store (the best candidate's, or one example's) and writes the file.
"""

from __future__ import annotations

from pathlib import Path

from promptopt.errors import ConfigError
from promptopt.graph.layout import to_svg
from promptopt.graph.render import FORMATS, pick_trace, to_dot, to_html
from promptopt.report.files import write_text
from promptopt.store import RunStore

__all__ = ["write_graph"]


def write_graph(
    run: Path | str,
    *,
    example: str | int | None = None,
    out: Path | str | None = None,
    fmt: str = "html",
    output_dir: Path | str = "traces",
) -> Path:
    """Draw one trace of ``run`` (a run folder or id) to ``out``; returns the file written.

    ``fmt`` is ``html`` (default), ``svg`` or ``dot``; ``out`` defaults to
    ``<run>/graph-<example or trace id>.<fmt>``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"graph format {fmt!r} is not one of {', '.join(FORMATS)}")
    with RunStore.open(run, output_dir=output_dir) as store:
        checkpoint = store.latest_checkpoint()
        best = checkpoint[1].get("best_id") if checkpoint else None
        trace = store.trace(pick_trace(store.trace_rows(), example=example, best=best)["id"])
        root = store.root
    text = {"html": to_html, "svg": lambda t: to_svg(t.nodes), "dot": to_dot}[fmt](trace)
    target = (
        Path(out)
        if out is not None
        else root / f"graph-{example if example is not None else trace.id}.{fmt}"
    )
    return write_text(target, text, what="graph")

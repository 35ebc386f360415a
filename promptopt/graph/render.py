"""A trace as DOT text, an SVG picture, or a self-contained HTML page (``promptopt graph RUN``).

The HTML page holds the SVG inline (laid out by :mod:`promptopt.graph.layout`, so
system graphviz is never required) above a table of every node's inputs, output,
duration, error and LLM calls, and the trace's feedback. DOT text is there for
people who do have graphviz (``dot -Tsvg graph.dot``). Reading a trace out of a
run store and writing the file is :func:`promptopt.report.graphs.write_graph`'s.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from promptopt.errors import ConfigError, StoreError
from promptopt.graph.layout import to_svg
from promptopt.graph.tracer import Trace
from promptopt.text import one_line, shorten

__all__ = ["FORMATS", "pick_trace", "to_dot", "to_html"]

FORMATS = ("html", "svg", "dot")


def _dot_text(text: str) -> str:
    text = shorten(one_line(text), 40)
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(trace: Trace) -> str:
    """The trace as graphviz DOT text."""
    lines = [f'digraph "{_dot_text(trace.name or trace.id)}" {{', "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="sans-serif"];']  # fmt: skip
    for node in trace.nodes:
        fill = "#fff3c4" if node.kind == "param" else "#dcecff"
        fill = "#ffd9d9" if node.error is not None else fill
        detail = node.error if node.error is not None else node.output
        shown = detail if isinstance(detail, str) else json.dumps(detail)
        lines.append(
            f'  n{node.index} [label="{_dot_text(node.name)}\\n{_dot_text(shown)}", '
            f'fillcolor="{fill}"];'
        )
    for node in trace.nodes:
        lines.extend(f"  n{parent} -> n{node.index};" for parent in node.parents)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)
    return f"<pre>{escape(text)}</pre>"


def to_html(trace: Trace) -> str:
    """A self-contained HTML page: the picture, then every node's details."""
    nodes = trace.nodes
    rows = []
    for node in nodes:
        calls = "".join(_cell(call) for call in node.llm_calls)
        rows.append(
            f"<tr><td>{node.index}</td><td>{escape(node.kind)}</td><td><b>{escape(node.name)}"
            f"</b><br><small>{escape(node.doc or node.description)}</small></td>"
            f"<td>{_cell(node.inputs) if node.inputs else ''}</td><td>{_cell(node.output)}</td>"
            f"<td>{', '.join(map(str, node.parents))}</td>"
            f"<td>{node.duration_ns / 1000:.1f} µs</td>"
            f"<td>{escape(node.error or '')}</td>"
            f"<td>{f'<details><summary>{len(node.llm_calls)}</summary>{calls}</details>' if calls else ''}</td></tr>"
        )
    feedback = "".join(f"<li>{escape(f.kind)} on node {f.output}: {escape(str(f.value))}</li>"
                       for f in trace.feedback)  # fmt: skip
    title = escape(trace.name or "trace")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title} {escape(trace.id)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; text-align: left; }}
pre {{ margin: 0; white-space: pre-wrap; max-width: 40em; max-height: 14em; overflow: auto; }}
</style></head><body>
<h1>{title}</h1>
<p>trace <code>{escape(trace.id)}</code>, {len(nodes)} nodes; meta {_cell(trace.meta)}</p>
{f"<h2>Feedback</h2><ul>{feedback}</ul>" if feedback else ""}
<div>{to_svg(nodes)}</div>
<h2>Nodes</h2>
<table><tr><th>#</th><th>kind</th><th>name</th><th>inputs</th><th>output</th><th>parents</th>
<th>time</th><th>error</th><th>LLM calls</th></tr>
{"".join(rows)}
</table></body></html>
"""


def pick_trace(
    rows: list[dict[str, Any]], *, example: str | int | None, best: str | None = None
) -> dict[str, Any]:
    """The stored trace to draw, as its row: ``example``'s (an example id) or any example's.

    Among those, the run's best candidate (``best``) comes first, on the test split
    before the others, so ``promptopt graph RUN`` shows what the optimized workflow did.
    """
    if not rows:
        raise StoreError("the run has no traces to draw")
    pool = rows if example is None else [r for r in rows if r["example_id"] == str(example)]
    if not pool:
        known = sorted({str(r["example_id"]) for r in rows if r["example_id"] is not None})
        raise ConfigError(f"the run has no trace of example {str(example)!r}; examples: {known!r}")
    ranked = sorted(
        pool,
        key=lambda r: (r["candidate_id"] != best or best is None, r["split"] != "test"),
    )
    return ranked[0]

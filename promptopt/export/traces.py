"""``export_traces``: a run's stored traces as JSON lines, and each as a GraphML file.

One line per trace: its id, name, candidate, split, example, the score of its
evaluation, meta, nodes (``TraceNode`` fields) and feedback, in the order the run
stored them. GraphML (via :func:`promptopt.graph.to_networkx`) holds only scalar
attributes, so a node's structured fields (inputs, output, LLM calls, ...) are
written as JSON text and a missing value as ``""``; networkx, Gephi and yEd read it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from promptopt.errors import ConfigError
from promptopt.export.splitting import RowWriter
from promptopt.graph.export import to_networkx
from promptopt.store.runs import RUN_FILE, read_only, resolve_run
from promptopt.store.runstore import RunStore

__all__ = ["export_traces", "graphml_ready"]


def export_traces(
    run: str | Path,
    out: str | Path,
    *,
    graphml: str | Path | None = None,
    output_dir: str | Path = "traces",
) -> int:
    """Write every trace of ``run`` to ``out`` (JSON lines) and, with ``graphml``, one
    ``<trace id>.graphml`` per trace into that folder; returns the number of traces."""
    root = resolve_run(run, output_dir=output_dir)
    conn = read_only(root / RUN_FILE)
    conn.row_factory = sqlite3.Row
    store = RunStore(root, conn)  # read through the store's own trace loading, never writing
    folder = None if graphml is None else Path(graphml)
    try:
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create {str(folder)!r}: {exc}") from exc
        scores = {
            (row["candidate_id"], row["split"], row["example_id"]): float(row["score"])
            for row in conn.execute(
                "SELECT candidate_id, split, example_id, score FROM evaluations"
            )
        }
        with RowWriter(Path(out), None, curriculum=False) as writer:
            for info in store.trace_rows():
                trace = store.trace(info["id"])
                where = (info["candidate_id"], info["split"], info["example_id"])
                row = {**trace.to_dict(), "candidate": info["candidate_id"] or "",
                       "split": info["split"] or "", "example": info["example_id"] or "",
                       "score": scores.get(where)}  # fmt: skip
                writer.write(row, test=False, rank=0.0)
                if folder is not None:
                    _write_graphml(
                        graphml_ready(to_networkx(trace)), folder / f"{trace.id}.graphml"
                    )
        return writer.counts["train"]
    finally:
        store.close()


def _scalar(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def graphml_ready(graph: Any) -> Any:
    """``graph`` with every graph, node and edge attribute a GraphML scalar."""
    graph.graph.update({k: _scalar(v) for k, v in graph.graph.items()})
    for _, data in graph.nodes(data=True):
        data.update({k: _scalar(v) for k, v in data.items()})
    for _, _, data in graph.edges(data=True):
        data.update({k: _scalar(v) for k, v in data.items()})
    return graph


def _write_graphml(graph: Any, path: Path) -> None:
    import networkx as nx

    try:
        nx.write_graphml(graph, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc}") from exc

"""Traced graphs in the run store: ``RunStore.add_trace`` and ``RunStore.traces``.

A :class:`~promptopt.graph.Trace` is stored as one ``traces`` row, one
``trace_nodes`` row per node (the node's fields as JSON), one ``trace_edges`` row
per parent link (ordered) and one ``trace_feedback`` row per feedback. Reading it
back gives a trace whose ``to_dict()`` equals the one written. Feedback given
after a trace was stored is appended with :meth:`add_trace_feedback`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from promptopt.errors import StoreError
from promptopt.graph.records import Feedback
from promptopt.graph.tracer import Trace
from promptopt.store.query import select_where

__all__ = ["TraceStoreMixin"]


def _dumps(value: Any, *, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {what!r} as JSON: {exc}") from exc


class TraceStoreMixin:
    """The trace methods of :class:`~promptopt.store.RunStore` (uses its ``_write``/``_rows``)."""

    def add_trace(
        self,
        trace: Trace,
        *,
        candidate_id: str | None = None,
        split: str | None = None,
        example_id: str | None = None,
    ) -> str:
        """Record ``trace`` (nodes, edges, feedback); returns its id. Storing it twice fails."""
        data = trace.to_dict()
        nodes: list[tuple[Any, ...]] = []
        edges: list[tuple[Any, ...]] = []
        for node in data["nodes"]:
            rest = {k: v for k, v in node.items() if k not in ("index", "kind", "name", "parents")}
            nodes.append((data["id"], node["index"], node["kind"], node["name"],
                          _dumps(rest, what=f"trace node {node['name']}")))  # fmt: skip
            edges.extend(
                (data["id"], src, node["index"], pos) for pos, src in enumerate(node["parents"])
            )
        now = time.time()
        with self._write() as conn:  # type: ignore[attr-defined]
            try:
                conn.execute(
                    "INSERT INTO traces (id, name, candidate_id, split, example_id, meta,"
                    " started_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (data["id"], data["name"], candidate_id, split,
                     None if example_id is None else str(example_id),
                     _dumps(data["meta"], what="trace meta"), data["started_at"], now),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"trace {data['id']!r} is already stored") from exc
            conn.executemany(
                "INSERT INTO trace_nodes (trace_id, idx, kind, name, data) VALUES (?, ?, ?, ?, ?)",
                nodes,
            )
            conn.executemany(
                "INSERT INTO trace_edges (trace_id, src, dst, pos) VALUES (?, ?, ?, ?)", edges
            )
            conn.executemany(
                "INSERT INTO trace_feedback (trace_id, output, kind, value, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(data["id"], f["output"], f["kind"], _dumps(f["value"], what="feedback"), now)
                 for f in data["feedback"]],
            )  # fmt: skip
        return data["id"]

    def add_trace_feedback(self, trace_id: str, feedback: Feedback) -> None:
        """Append feedback to a stored trace."""
        with self._write() as conn:  # type: ignore[attr-defined]
            try:
                conn.execute(
                    "INSERT INTO trace_feedback (trace_id, output, kind, value, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (trace_id, feedback.output, feedback.kind,
                     _dumps(feedback.value, what="feedback"), time.time()),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"trace {trace_id!r} is not stored") from exc

    def traces(
        self,
        *,
        candidate_id: str | None = None,
        split: str | None = None,
        example_id: str | None = None,
    ) -> list[Trace]:
        """Stored traces in insertion order, optionally filtered."""
        sql, params = select_where(
            "traces",
            "rowid",
            {"candidate_id": candidate_id, "split": split, "example_id": example_id},
        )
        rows = self._rows(sql, params)  # type: ignore[attr-defined]
        return [self._load_trace(row) for row in rows]

    def trace(self, trace_id: str) -> Trace:
        """One stored trace by id."""
        rows = self._rows("SELECT * FROM traces WHERE id = ?", (trace_id,))  # type: ignore[attr-defined]
        if not rows:
            raise StoreError(f"trace {trace_id!r} is not stored")
        return self._load_trace(rows[0])

    def trace_rows(self) -> list[dict[str, Any]]:
        """One dict per stored trace (id, name, candidate_id, split, example_id, nodes)."""
        rows = self._rows(  # type: ignore[attr-defined]
            "SELECT t.id, t.name, t.candidate_id, t.split, t.example_id,"
            " (SELECT count(*) FROM trace_nodes n WHERE n.trace_id = t.id) AS nodes"
            " FROM traces t ORDER BY t.rowid"
        )
        return [dict(row) for row in rows]

    def _load_trace(self, row: Any) -> Trace:
        trace_id = row["id"]
        parents: dict[int, list[int]] = {}
        for edge in self._rows(  # type: ignore[attr-defined]
            "SELECT src, dst FROM trace_edges WHERE trace_id = ? ORDER BY dst, pos", (trace_id,)
        ):
            parents.setdefault(edge["dst"], []).append(edge["src"])
        nodes = [
            {"index": n["idx"], "kind": n["kind"], "name": n["name"],
             "parents": parents.get(n["idx"], []), **json.loads(n["data"])}
            for n in self._rows(  # type: ignore[attr-defined]
                "SELECT * FROM trace_nodes WHERE trace_id = ? ORDER BY idx", (trace_id,)
            )
        ]  # fmt: skip
        feedback = [
            {"output": f["output"], "kind": f["kind"], "value": json.loads(f["value"])}
            for f in self._rows(  # type: ignore[attr-defined]
                "SELECT * FROM trace_feedback WHERE trace_id = ? ORDER BY id", (trace_id,)
            )
        ]
        return Trace.from_dict({
            "id": trace_id, "name": row["name"], "meta": json.loads(row["meta"]),
            "started_at": row["started_at"], "nodes": nodes, "feedback": feedback,
        })  # fmt: skip

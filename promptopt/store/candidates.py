"""Candidates and their evaluations in the run store: ``RunStore.add_candidate``,
``add_evaluations``, ``add_proposal`` and what is read back of them.

A candidate is recorded once (the same id again with other params means a
resumed run diverged); an evaluation is one example's result, the first of a
(candidate, split, example) kept; a proposal links a candidate to the optimizer
call whose reply proposed it (for the export of preference pairs).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from promptopt.errors import StoreError
from promptopt.store.jsoncol import decoded as _decoded
from promptopt.store.jsoncol import json_text as _json
from promptopt.store.query import select_where

__all__ = ["CandidateStoreMixin"]


class CandidateStoreMixin:
    """The candidate, evaluation and proposal methods of :class:`~promptopt.store.RunStore`
    (uses its ``_write``/``_rows``)."""

    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _rows: Callable[..., list[sqlite3.Row]]

    def add_candidate(
        self,
        candidate_id: str,
        params: Mapping[str, Any],
        *,
        parent_id: str | None,
        step: int,
        origin: str,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a candidate; adding the same id again with the same params does nothing."""
        encoded = _json(params, what="params")
        with self._write() as conn:
            row = conn.execute(
                "SELECT params FROM candidates WHERE id = ?", (candidate_id,)
            ).fetchone()
            if row is not None:
                if json.loads(row[0]) != json.loads(encoded):
                    raise StoreError(
                        f"candidate {candidate_id!r} is already recorded with other params; "
                        f"the resumed run diverged from the recorded one"
                    )
                return
            try:
                conn.execute(
                    "INSERT INTO candidates (id, params, parent_id, step, origin, meta, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (candidate_id, encoded, parent_id, int(step), origin,
                     _json(dict(meta or {}), what="meta"), time.time()),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"candidate {candidate_id!r} names parent {parent_id!r}, which is not recorded"
                ) from exc

    def candidates(self) -> list[dict[str, Any]]:
        """Every candidate in insertion order, ``params`` and ``meta`` decoded."""
        return [
            _decoded(row, params=True, meta=True)
            for row in self._rows("SELECT * FROM candidates ORDER BY rowid")
        ]

    def add_evaluation(
        self,
        *,
        candidate_id: str,
        split: str,
        example_id: str,
        inputs: Mapping[str, Any],
        target: Any,
        output: str | None,
        score: float,
        valid: bool,
        feedback: str = "",
        error: str | None = None,
        request_key: str | None = None,
    ) -> None:
        """Record one example's result; a repeat of (candidate, split, example) keeps the first."""
        self.add_evaluations([{
            "candidate_id": candidate_id, "split": split, "example_id": example_id,
            "inputs": inputs, "target": target, "output": output, "score": score,
            "valid": valid, "feedback": feedback, "error": error, "request_key": request_key,
        }])  # fmt: skip

    def add_evaluations(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record many evaluations in one transaction (fields as :meth:`add_evaluation`)."""
        values = [_evaluation_row(**row) for row in rows]
        with self._write() as conn:
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO evaluations (candidate_id, split, example_id, inputs,"
                    " target, output, score, valid, feedback, error, request_key, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
            except sqlite3.IntegrityError as exc:
                unknown = sorted({v[0] for v in values} - {c["id"] for c in self.candidates()})
                raise StoreError(
                    f"evaluations name candidates that are not recorded: {unknown!r}"
                ) from exc

    def evaluations(
        self, *, candidate_id: str | None = None, split: str | None = None
    ) -> list[dict[str, Any]]:
        """Recorded evaluations in order, optionally of one candidate and/or one split."""
        sql, params = select_where(
            "evaluations", "id", {"candidate_id": candidate_id, "split": split}
        )
        return [
            _decoded(row, inputs=True, target=True, valid=bool) for row in self._rows(sql, params)
        ]

    def add_proposal(self, *, candidate_id: str, call_key: str, step: int) -> None:
        """Record that the optimizer reply of call ``call_key`` proposed ``candidate_id``
        (recording the same link again does nothing)."""
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT OR IGNORE INTO proposals (candidate_id, call_key, step, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (candidate_id, call_key, int(step), time.time()),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"proposal names candidate {candidate_id!r}, not recorded"
                ) from exc

    def proposals(self) -> list[dict[str, Any]]:
        """Every recorded proposal link (candidate_id, call_key, step) in order."""
        return [dict(row) for row in self._rows("SELECT * FROM proposals ORDER BY id")]


def _evaluation_row(
    *,
    candidate_id: str,
    split: str,
    example_id: str,
    inputs: Mapping[str, Any],
    target: Any,
    output: str | None,
    score: float,
    valid: bool,
    feedback: str = "",
    error: str | None = None,
    request_key: str | None = None,
) -> tuple[Any, ...]:
    return (
        candidate_id, split, str(example_id), _json(inputs, what="inputs"), _json(target, what="target"),
        output, float(score), int(bool(valid)), feedback, error, request_key, time.time(),
    )  # fmt: skip

"""LLM calls in the run store: ``RunStore.record_llm_call`` and what is read back of them.

Every call event is one ``llm_calls`` row; a replayed call is a new row with
``cached = 1`` that never shadows the answer first recorded for its key.
:meth:`~LLMCallStoreMixin.recorded_response` answers a resumed run's requests
from here, and :meth:`~LLMCallStoreMixin.budget_spent` carries what earlier
processes paid into its budget.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from promptopt.llm.types import LLMResponse
from promptopt.store.jsoncol import decoded as _decoded
from promptopt.store.jsoncol import json_text as _json

__all__ = ["LLMCallStoreMixin"]


class LLMCallStoreMixin:
    """The LLM-call methods of :class:`~promptopt.store.RunStore` (uses its ``_write``/``_rows``)."""

    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _rows: Callable[..., list[sqlite3.Row]]

    def record_llm_call(self, event: Any) -> None:
        """Record one call event (the fields of ``promptopt.llm`` ``CallEvent``)."""
        request = event.request
        typed = hasattr(request, "canonical")  # promptopt's own LLMRequest: fixed, key-free fields
        canonical = request.canonical() if typed else request
        response = event.response
        usage = getattr(response, "usage", None)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO llm_calls (key, provider, model, tag, request, response, error, cached,"
                " attempts, started_at, duration_s, prompt_tokens, completion_tokens, cost_usd,"
                " budgeted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.key,
                    event.provider or "",
                    event.model or "",
                    getattr(request, "tag", None),
                    # a typed request or response has a fixed set of fields, none of them a
                    # credential: the scrubbing walk is only needed for foreign objects
                    _json(canonical, what="request", scrub=not typed),
                    None
                    if response is None
                    else _json(response.to_dict(), what="response", scrub=not typed),
                    event.error,
                    int(bool(event.cached)),
                    int(event.attempts),
                    float(event.started_at),
                    float(event.duration_s),
                    usage.prompt_tokens if usage else 0,
                    usage.completion_tokens if usage else 0,
                    float(getattr(response, "cost_usd", 0.0) or 0.0),
                    int(bool(getattr(event, "budgeted", True))),
                ),
            )

    def answered_keys(self, *, budgeted: bool = False) -> set[str]:
        """Keys of every request with a recorded (non-replayed) answer; ``budgeted``: only
        those that counted against the run's budget."""
        rows = self._rows(
            "SELECT DISTINCT key FROM llm_calls WHERE cached = 0 AND response IS NOT NULL"
            + (" AND budgeted = 1" if budgeted else "")
        )
        return {row[0] for row in rows}

    def budget_spent(self) -> dict[str, Any]:
        """``calls``, ``tokens`` and ``usd`` of the paid calls that count against the budget.

        A paid call is one a backend answered (not a replay, not a cache hit), in
        any process of this run. A call that was in flight when a process died may
        have been billed without being recorded: it is not counted.
        """
        calls, tokens, usd = self._rows(
            "SELECT count(*), coalesce(sum(prompt_tokens + completion_tokens), 0),"
            " coalesce(sum(cost_usd), 0.0) FROM llm_calls"
            " WHERE cached = 0 AND response IS NOT NULL AND budgeted = 1"
        )[0]
        return {"calls": int(calls), "tokens": int(tokens), "usd": float(usd)}

    def recorded_response(self, key: str) -> LLMResponse | None:
        """The first successful backend answer recorded for ``key`` (marked ``cached``), or None."""
        rows = self._rows(
            "SELECT response FROM llm_calls"
            " WHERE key = ? AND cached = 0 AND response IS NOT NULL ORDER BY id LIMIT 1",
            (key,),
        )
        return LLMResponse.from_dict(json.loads(rows[0][0]), cached=True) if rows else None

    def llm_calls(self) -> list[dict[str, Any]]:
        """Every recorded call in order, ``request`` and ``response`` decoded."""
        return [
            _decoded(row, request=True, response=True, cached=bool)
            for row in self._rows("SELECT * FROM llm_calls ORDER BY id")
        ]

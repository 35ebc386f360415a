"""The run store: one run's ``run.sqlite`` (SQLite, WAL, append-only).

It records every LLM call, candidate, evaluation, optimizer decision, status
change and checkpoint of a run (traces and optimizers' own records through its
mixins), and answers recorded LLM responses by request
key so that a resumed run repeats no paid call. Every write commits at once (a
batch commits as one transaction), so a killed process loses nothing it wrote.
Rows are never updated or deleted: a status change is a new status event, and a
replayed LLM call is a new row with ``cached = 1`` that never shadows the answer
first recorded for its key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from promptopt.errors import ConfigError, StoreError
from promptopt.llm.types import LLMResponse
from promptopt.store.jsoncol import json_text as _json
from promptopt.store.migrations import MIGRATIONS, Migration, migrate
from promptopt.store.records import OptimizerRecordsMixin
from promptopt.store.runs import RUN_FILE, resolve_run
from promptopt.store.traces import TraceStoreMixin
from promptopt.store.votes import VoteStoreMixin

__all__ = ["STATUSES", "RunStore"]

STATUSES = ("running", "finished", "failed", "interrupted")

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:40] or "task"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("promptopt")
    except PackageNotFoundError:
        return "unknown"


def _connect(db: Path, *, migrations: Sequence[Migration]) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(db, timeout=30.0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open run store {str(db)!r}: {exc}") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"run store {str(db)!r} cannot use WAL journaling (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, migrations=migrations, where=f"run store {str(db)!r}")
    except sqlite3.OperationalError as exc:  # full disk, read-only file, locked
        conn.close()
        raise StoreError(f"cannot open run store {str(db)!r} for writing: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{str(db)!r} is not a readable run store: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row
    return conn


class RunStore(TraceStoreMixin, OptimizerRecordsMixin, VoteStoreMixin):
    """One run's store; create it with :meth:`create`, reopen it with :meth:`open`."""

    root: Path
    run_id: str

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.run_id = root.name
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.write_error: StoreError | None = None  # the first write that failed, if any

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        output_dir: Path | str,
        *,
        task: Mapping[str, Any],
        task_path: str | None = None,
        run_id: str | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Self:
        """Start a new run folder ``<output_dir>/<run_id>`` and record its meta rows.

        The default run id is ``<UTC yyyymmdd-HHMMSS>-<task name>-<4 hex>``.
        """
        now = datetime.now(UTC)
        task_name = str(task.get("name") or "task")
        if run_id is None:
            stem = f"{now:%Y%m%d-%H%M%S}-{_slug(task_name)}"
            ids = (f"{stem}-{os.urandom(2).hex()}" for _ in range(16))
            run_id = next((i for i in ids if not (Path(output_dir) / i).exists()), stem + "-x")
        elif not _RUN_ID.fullmatch(run_id):
            raise ConfigError(
                f"run id {run_id!r} must be one folder name of letters, digits, '.', '_' and '-'"
            )
        root = Path(output_dir) / run_id
        if (root / RUN_FILE).exists():
            raise StoreError(f"run {run_id!r} already exists in {str(root)!r}; resume it instead")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create run folder {str(root)!r}: {exc}") from exc
        store = cls(root.resolve(), _connect(root / RUN_FILE, migrations=migrations))
        rows = {
            "run_id": run_id,
            "task": task,
            "task_name": task_name,
            "task_path": task_path,
            "created_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "promptopt_version": _version(),
        }
        with store._write() as conn:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [(key, _json(value, what=key, scrub=True)) for key, value in rows.items()],
            )
            conn.execute(
                "INSERT INTO status_events (status, detail, at) VALUES ('running', 'created', ?)",
                (time.time(),),
            )
        return store

    @classmethod
    def open(
        cls,
        run: Path | str,
        *,
        output_dir: Path | str = "traces",
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Self:
        """Reopen a run by folder path or run id (see :func:`resolve_run`), migrating it."""
        root = resolve_run(run, output_dir=output_dir)
        return cls(root, _connect(root / RUN_FILE, migrations=migrations))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # -- plumbing --------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"run store {self.run_id!r} is closed")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed on success, rolled back on error.

        SQLite cannot write (full disk, read-only file, I/O error): a StoreError that
        says so; the transaction is rolled back, so every row written before stays.
        """
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                error = StoreError(
                    f"cannot write run store {str(self.root / RUN_FILE)!r}: {exc}; what it "
                    f"recorded so far is kept: free space (or make it writable), then resume "
                    f"the run with --resume {self.run_id}"
                )
                self.write_error = self.write_error or error
                raise error from exc

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db().execute(sql, params).fetchall()

    # -- LLM calls -------------------------------------------------------------------------

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

    # -- candidates and evaluations --------------------------------------------------------

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
        sql, params = "SELECT * FROM evaluations WHERE 1 = 1", []
        if candidate_id is not None:
            sql, params = sql + " AND candidate_id = ?", [*params, candidate_id]
        if split is not None:
            sql, params = sql + " AND split = ?", [*params, split]
        return [
            _decoded(row, inputs=True, target=True, valid=bool)
            for row in self._rows(sql + " ORDER BY id", params)
        ]

    # -- decisions, checkpoints, status ----------------------------------------------------

    def add_decision(self, *, step: int, kind: str, payload: Mapping[str, Any]) -> None:
        """Record one optimizer decision (accept, reject, expand, ...)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO decisions (step, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                (int(step), kind, _json(payload, what="payload"), time.time()),
            )

    def decisions(self) -> list[dict[str, Any]]:
        """Every recorded decision in order, ``payload`` decoded."""
        return [
            _decoded(row, payload=True) for row in self._rows("SELECT * FROM decisions ORDER BY id")
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

    def checkpoint(self, *, step: int, state: Mapping[str, Any]) -> None:
        """Record the engine state after ``step``; its ``best_score`` (or ``best_val``) shows in run listings."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO checkpoints (step, state, created_at) VALUES (?, ?, ?)",
                (int(step), _json(state, what="state"), time.time()),
            )

    def latest_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        rows = self._rows("SELECT step, state FROM checkpoints ORDER BY id DESC LIMIT 1")
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    def set_status(self, status: str, *, detail: str = "") -> None:
        """Append a status event: one of ``running``, ``finished``, ``failed``, ``interrupted``."""
        if status not in STATUSES:
            raise ConfigError(f"run status {status!r} is not one of {', '.join(STATUSES)}")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO status_events (status, detail, at) VALUES (?, ?, ?)",
                (status, detail, time.time()),
            )

    def status(self) -> str:
        rows = self._rows("SELECT status FROM status_events ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else "unknown"

    def status_events(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._rows("SELECT * FROM status_events ORDER BY id")]

    def meta(self) -> dict[str, Any]:
        """The meta rows (run_id, task, task_name, task_path, created_at, promptopt_version)
        plus the current ``status``."""
        rows = self._rows("SELECT key, value FROM meta")
        return {row[0]: json.loads(row[1]) for row in rows} | {"status": self.status()}

    def summary(self) -> dict[str, Any]:
        """Counts of the run: calls (backend vs cached vs failed), tokens and cost of backend
        calls, candidates, evaluations, decisions, last checkpointed step, status."""
        calls = self._rows(
            "SELECT count(*), coalesce(sum(cached), 0),"
            " coalesce(sum(error IS NOT NULL AND cached = 0), 0),"
            " coalesce(sum(CASE WHEN cached = 0 THEN prompt_tokens END), 0),"
            " coalesce(sum(CASE WHEN cached = 0 THEN completion_tokens END), 0),"
            " coalesce(sum(CASE WHEN cached = 0 THEN cost_usd END), 0.0) FROM llm_calls"
        )[0]
        counts = self._rows(
            "SELECT (SELECT count(*) FROM candidates), (SELECT count(*) FROM evaluations),"
            " (SELECT count(*) FROM decisions)"
        )[0]
        last = self.latest_checkpoint()
        return {
            "run_id": self.run_id,
            "status": self.status(),
            "llm_calls": calls[0],
            "backend_calls": calls[0] - calls[1],
            "cached_calls": calls[1],
            "failed_calls": calls[2],
            "prompt_tokens": calls[3],
            "completion_tokens": calls[4],
            "total_tokens": calls[3] + calls[4],
            "cost_usd": float(calls[5]),
            "candidates": counts[0],
            "evaluations": counts[1],
            "decisions": counts[2],
            "last_step": None if last is None else last[0],
        }


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


def _decoded(row: sqlite3.Row, **columns: Any) -> dict[str, Any]:
    """``row`` as a dict; a column named ``True`` is JSON-decoded, one named with a type is cast."""
    out = dict(row)
    for column, how in columns.items():
        if out.get(column) is not None:
            out[column] = json.loads(out[column]) if how is True else how(out[column])
    return out

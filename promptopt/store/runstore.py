"""The run store: one run's ``run.sqlite`` (SQLite, WAL, append-only).

It records every LLM call, candidate, evaluation, optimizer decision, status
change and checkpoint of a run (LLM calls, candidates, evaluations, traces, votes
and optimizers' own records through its mixins), and answers recorded LLM responses by request
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
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from promptopt.errors import ConfigError, StoreError
from promptopt.store.calls import LLMCallStoreMixin
from promptopt.store.candidates import CandidateStoreMixin
from promptopt.store.jsoncol import decoded as _decoded
from promptopt.store.jsoncol import json_text as _json
from promptopt.store.migrations import MIGRATIONS, Migration, migrate
from promptopt.store.optimizer_records import OptimizerRecordsMixin
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


class RunStore(
    LLMCallStoreMixin,
    CandidateStoreMixin,
    TraceStoreMixin,
    OptimizerRecordsMixin,
    VoteStoreMixin,
):
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

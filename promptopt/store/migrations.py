"""The run store's schema, as an ordered list of migrations, and the code that applies them.

``MIGRATIONS`` is a list of ``(version, sql)`` pairs with strictly increasing
versions. A store records every version applied to it in ``schema_migrations``;
opening an older store applies the missing migrations in order, all inside one
transaction, so a store is never left half-migrated. A store that holds a version
this promptopt does not know was written by a newer promptopt and is refused.

To change the schema, append a new ``(version, sql)`` pair; never edit one that
has shipped. Recorded tables are append-only: triggers refuse UPDATE and DELETE,
so a status change or a correction is always a new row.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence

from promptopt.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "applied_versions", "migrate"]

Migration = tuple[int, str]


def _append_only(table: str) -> str:
    """SQL for the two triggers that make ``table`` append-only."""
    return "\n".join(
        f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'run store table {table} is append-only'); END;"
        for verb in ("UPDATE", "DELETE")
    )


_V1 = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                 -- JSON
);
CREATE TABLE status_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    at     REAL NOT NULL
);
CREATE TABLE llm_calls (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    key               TEXT NOT NULL,
    provider          TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL DEFAULT '',
    tag               TEXT,
    request           TEXT NOT NULL,    -- JSON: LLMRequest.canonical()
    response          TEXT,             -- JSON: LLMResponse.to_dict(), NULL on error
    error             TEXT,
    cached            INTEGER NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 1,
    started_at        REAL NOT NULL DEFAULT 0,
    duration_s        REAL NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0
);
-- resume: the first successful backend answer for a request key
CREATE INDEX llm_calls_answer ON llm_calls (key, id)
    WHERE cached = 0 AND response IS NOT NULL;
CREATE TABLE candidates (
    id         TEXT PRIMARY KEY,
    params     TEXT NOT NULL,           -- JSON: parameter name -> value
    parent_id  TEXT REFERENCES candidates (id),
    step       INTEGER NOT NULL,
    origin     TEXT NOT NULL,
    meta       TEXT NOT NULL DEFAULT '{{}}',  -- JSON
    created_at REAL NOT NULL
);
CREATE TABLE evaluations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id TEXT NOT NULL REFERENCES candidates (id),
    split        TEXT NOT NULL,
    example_id   TEXT NOT NULL,
    inputs       TEXT NOT NULL,         -- JSON
    target       TEXT NOT NULL,         -- JSON
    output       TEXT,
    score        REAL,
    valid        INTEGER NOT NULL,
    feedback     TEXT NOT NULL DEFAULT '',
    error        TEXT,
    request_key  TEXT,
    created_at   REAL NOT NULL,
    UNIQUE (candidate_id, split, example_id)
);
CREATE TABLE decisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    step       INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,           -- JSON
    created_at REAL NOT NULL
);
CREATE INDEX decisions_step ON decisions (step);
CREATE TABLE checkpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    step       INTEGER NOT NULL,
    state      TEXT NOT NULL,           -- JSON
    created_at REAL NOT NULL
);
{_append_only("meta")}
{_append_only("status_events")}
{_append_only("llm_calls")}
{_append_only("candidates")}
{_append_only("evaluations")}
{_append_only("decisions")}
{_append_only("checkpoints")}
"""

_V2 = f"""
CREATE TABLE traces (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL DEFAULT '',
    candidate_id TEXT,
    split        TEXT,
    example_id   TEXT,
    meta         TEXT NOT NULL DEFAULT '{{}}',  -- JSON
    started_at   REAL NOT NULL,
    created_at   REAL NOT NULL
);
CREATE INDEX traces_example ON traces (example_id);
CREATE TABLE trace_nodes (
    trace_id TEXT NOT NULL REFERENCES traces (id),
    idx      INTEGER NOT NULL,
    kind     TEXT NOT NULL,             -- 'op' | 'param'
    name     TEXT NOT NULL,
    data     TEXT NOT NULL,             -- JSON: the rest of TraceNode.to_dict()
    PRIMARY KEY (trace_id, idx)
);
CREATE TABLE trace_edges (
    trace_id TEXT NOT NULL REFERENCES traces (id),
    src      INTEGER NOT NULL,
    dst      INTEGER NOT NULL,
    pos      INTEGER NOT NULL,          -- order of src among dst's parents
    PRIMARY KEY (trace_id, dst, pos)
);
CREATE TABLE trace_feedback (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL REFERENCES traces (id),
    output   INTEGER NOT NULL,
    kind     TEXT NOT NULL,             -- 'score' | 'text' | 'error'
    value    TEXT NOT NULL,             -- JSON
    created_at REAL NOT NULL
);
CREATE INDEX trace_feedback_trace ON trace_feedback (trace_id, id);
{_append_only("traces")}
{_append_only("trace_nodes")}
{_append_only("trace_edges")}
{_append_only("trace_feedback")}
"""

# which calls count against the run's budget (the test scoring does not); rows written
# before it count, the safe side for a resumed run's budget
_V3 = "ALTER TABLE llm_calls ADD COLUMN budgeted INTEGER NOT NULL DEFAULT 1;"

_V4 = f"""
CREATE TABLE optimizer_records (
    seq        INTEGER PRIMARY KEY,     -- the record's place in the run; a replay writes the same
    optimizer  TEXT NOT NULL,
    step       INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,           -- JSON
    created_at REAL NOT NULL
);
{_append_only("optimizer_records")}
"""

_V5 = f"""
CREATE TABLE proposals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id TEXT NOT NULL REFERENCES candidates (id),
    call_key     TEXT NOT NULL,         -- llm_calls.key of the optimizer reply it was read from
    step         INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    UNIQUE (candidate_id, call_key)
);
-- an evaluation's or a proposal's request, whether answered by the backend or a cache
CREATE INDEX llm_calls_key ON llm_calls (key);
{_append_only("proposals")}
"""

_V6 = f"""
CREATE TABLE pairwise_votes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    step          INTEGER NOT NULL,
    incumbent_id  TEXT NOT NULL REFERENCES candidates (id),
    challenger_id TEXT NOT NULL REFERENCES candidates (id),
    vote          INTEGER NOT NULL,     -- 0-based index within the comparison
    swapped       INTEGER NOT NULL,     -- 1: the challenger's answers were shown as A
    choice        TEXT NOT NULL,        -- 'A', 'B', or '' when the reply was unreadable
    challenger_won INTEGER NOT NULL,
    reply         TEXT NOT NULL DEFAULT '',
    request_key   TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL,
    UNIQUE (incumbent_id, challenger_id, vote)
);
{_append_only("pairwise_votes")}
"""

MIGRATIONS: list[Migration] = [
    (1, _V1),
    (2, _V2),  # traced graphs: traces, their nodes, edges and feedback
    (3, _V3),  # llm_calls.budgeted
    (4, _V4),  # an optimizer's own records (the MCTS tree)
    (5, _V5),  # which optimizer call proposed which candidate (preference export)
    (6, _V6),  # the votes of pairwise judges (spo), one row per judge call
]

SCHEMA_VERSION: int = MIGRATIONS[-1][0]

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
)
"""


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [version for version, _ in migrations]
    if not versions or any(v <= 0 for v in versions) or versions != sorted(set(versions)):
        raise StoreError(
            f"migrations must have strictly increasing positive versions, got {versions!r}"
        )


def _statements(sql: str) -> Iterator[str]:
    """Split a script into complete statements (triggers and quoted ';' included)."""
    buffer = ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise StoreError(f"migration SQL ends with an incomplete statement: {buffer.strip()!r}")


def applied_versions(conn: sqlite3.Connection) -> list[int]:
    """The versions recorded in ``schema_migrations`` (empty for a new database)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [
        row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")
    ]


def migrate(
    conn: sqlite3.Connection,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    where: str = "run store",
) -> list[int]:
    """Apply the missing ``migrations`` in order in one transaction; return the versions applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``). ``where`` names
    the store in error messages. Raises :class:`StoreError` when the store holds a
    version newer than the last known one, or when a migration fails (nothing of
    it is kept).
    """
    _check_order(migrations)
    known = migrations[-1][0]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_BOOKKEEPING)
        done = set(applied_versions(conn))
        newest = max(done, default=0)
        if newest > known:
            raise StoreError(
                f"{where} has schema version {newest}, newer than this promptopt knows "
                f"({known}); it was written by a newer promptopt: upgrade promptopt "
                f"(pip install -U promptopt) to open it"
            )
        applied: list[int] = []
        for version, sql in migrations:
            if version in done:
                continue
            for statement in _statements(sql):
                try:
                    conn.execute(statement)
                except sqlite3.Error as exc:
                    raise StoreError(
                        f"{where}: migration {version} failed: {exc} (in {statement.strip()[:80]!r})"
                    ) from exc
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (version, time.time()),
            )
            applied.append(version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied

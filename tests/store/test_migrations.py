"""Tests of the ordered schema migrations of the run store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from promptopt.errors import StoreError
from promptopt.store import MIGRATIONS, SCHEMA_VERSION, RunStore
from promptopt.store.migrations import applied_versions, migrate

KNOWN = [v for v, _ in MIGRATIONS]
UNTERMINATED = "CREATE TABLE a (x INTEGER); CREATE TRIGGER t BEFORE UPDATE ON a BEGIN SELECT 1;"
FAKE_V2 = (
    SCHEMA_VERSION + 1,
    """
    CREATE TABLE nodes (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT DEFAULT 'a;b');
    CREATE TRIGGER nodes_no_update BEFORE UPDATE ON nodes
        BEGIN SELECT RAISE(ABORT, 'nodes are append-only; really'); END;
    ALTER TABLE decisions ADD COLUMN node_id INTEGER;
    """,
)


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migrations_are_ordered() -> None:
    versions = [v for v, _ in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1
    assert versions[-1] == SCHEMA_VERSION


def test_empty_database_gets_every_migration(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    assert applied_versions(conn) == []
    assert migrate(conn) == [v for v, _ in MIGRATIONS]
    assert applied_versions(conn) == [v for v, _ in MIGRATIONS]
    assert {"meta", "llm_calls", "candidates", "evaluations", "decisions", "checkpoints",
            "status_events", "schema_migrations"} <= tables(conn)  # fmt: skip
    assert migrate(conn) == []  # idempotent
    assert not conn.in_transaction


def test_v1_store_is_migrated_in_order_keeping_its_rows(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="old") as store:
        store.add_decision(step=1, kind="accept", payload={"c": "c1"})
        assert applied_versions(store._db()) == KNOWN
    custom = [*MIGRATIONS, FAKE_V2]
    with RunStore.open("old", output_dir=tmp_path, migrations=custom) as store:
        conn = store._db()
        assert applied_versions(conn) == [*KNOWN, FAKE_V2[0]]
        assert "nodes" in tables(conn)
        assert store.decisions()[0]["payload"] == {"c": "c1"}
        assert store.decisions()[0]["node_id"] is None
        conn.execute("INSERT INTO nodes (name) VALUES ('n')")
        assert conn.execute("SELECT note FROM nodes").fetchone()[0] == "a;b"
        with pytest.raises(sqlite3.IntegrityError, match="append-only; really"):
            conn.execute("UPDATE nodes SET name = 'm'")
    with RunStore.open("old", output_dir=tmp_path, migrations=custom) as store:
        assert applied_versions(store._db()) == [*KNOWN, FAKE_V2[0]]


def test_newer_store_is_refused_with_upgrade_advice(tmp_path: Path) -> None:
    RunStore.create(
        tmp_path, task={"name": "t"}, run_id="new", migrations=[*MIGRATIONS, FAKE_V2]
    ).close()
    with pytest.raises(
        StoreError, match=rf"schema version {FAKE_V2[0]}, newer .*upgrade promptopt"
    ):
        RunStore.open(tmp_path / "new")
    conn = connect(tmp_path / "new" / "run.sqlite")
    assert applied_versions(conn) == [*KNOWN, FAKE_V2[0]]  # untouched


def test_failed_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    migrate(conn)
    broken = (SCHEMA_VERSION + 1, "CREATE TABLE half (x INTEGER); INSERT INTO nowhere VALUES (1);")
    with pytest.raises(StoreError, match=rf"migration {broken[0]} failed: no such table: nowhere"):
        migrate(conn, migrations=[*MIGRATIONS, broken], where="test db")
    assert "half" not in tables(conn)
    assert applied_versions(conn) == KNOWN
    assert not conn.in_transaction


def test_several_missing_migrations_apply_in_order(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    steps = [(1, "CREATE TABLE a (x INTEGER);"), (2, "ALTER TABLE a ADD COLUMN y INTEGER;"),
             (5, "CREATE INDEX a_y ON a (y);")]  # fmt: skip
    migrate(conn, migrations=steps[:1])
    assert migrate(conn, migrations=steps) == [2, 5]
    assert applied_versions(conn) == [1, 2, 5]


@pytest.mark.parametrize("bad", [[], [(2, ""), (1, "")], [(1, ""), (1, "")], [(0, "")]])
def test_unordered_migration_lists_are_refused(tmp_path: Path, bad: list) -> None:
    with pytest.raises(StoreError, match="strictly increasing"):
        migrate(connect(tmp_path / "db.sqlite"), migrations=bad)


def test_incomplete_statement_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="incomplete statement"):
        migrate(connect(tmp_path / "db.sqlite"), migrations=[(1, UNTERMINATED)])

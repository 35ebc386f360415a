"""Output folders that cannot be written: one clear error line, nothing recorded lost, resumable.

A full disk is injected at the run store's SQLite connection: after a set number
of rows, every write fails with the error SQLite gives on a full disk (the
transaction rolls back, as SQLite's does). A read-only run folder is injected at
the lock file, the first thing a resume writes.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from budgeted_run import MAX_CALLS, only_run, outcome, row_counts, write_task
from fake_sentiment import picky_model

import promptopt.session as session
import promptopt.store.lock as lock_module
import promptopt.store.runstore as runstore
from promptopt.api import optimize
from promptopt.cli import main
from promptopt.llm.fakes import FakeBackend


class FillingDisk:
    """Wraps a store's connection: room for ``room`` rows, then writes fail as on a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written = 0  # rows committed
        self._pending = 0
        self._connect = runstore._connect

    def connect(self, db: Path, *, migrations: Any) -> Any:
        return _Connection(self, self._connect(db, migrations=migrations))

    def run(self, conn: sqlite3.Connection, method: str, sql: str, *args: Any) -> Any:
        verb = sql.lstrip().split(None, 1)[0].upper()
        if verb == "INSERT" and self.written + self._pending >= self.room:
            raise sqlite3.OperationalError("database or disk is full")
        cursor = getattr(conn, method)(sql, *args)
        if verb == "INSERT":
            self._pending += max(cursor.rowcount, 0)
        elif verb in ("COMMIT", "ROLLBACK", "BEGIN"):
            self.written += self._pending if verb == "COMMIT" else 0
            self._pending = 0
        return cursor


class _Connection:
    def __init__(self, disk: FillingDisk, conn: sqlite3.Connection) -> None:
        self._disk, self._conn = disk, conn

    def execute(self, sql: str, *args: Any) -> Any:
        return self._disk.run(self._conn, "execute", sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._disk.run(self._conn, "executemany", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.fixture
def picky_everywhere(monkeypatch) -> list[FakeBackend]:
    """Every model of a run built from a task file (the CLI's too) is a picky fake; all listed."""
    made: list[FakeBackend] = []

    def make(ref: Any, cfg: Any) -> FakeBackend:
        made.append(FakeBackend(picky_model))
        return made[-1]

    monkeypatch.setattr(session, "make_backend", make)
    return made


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("promptopt: error:")]


def test_a_full_disk_stops_the_run_with_one_line_and_loses_nothing(
    tmp_path, monkeypatch, capsys, picky_everywhere
):
    path = write_task(tmp_path, '"fake:positive"')
    expected = outcome(optimize(path, output=tmp_path / "reference").run_dir)
    out = tmp_path / "traces"
    disk = FillingDisk(room=60)  # the seed's 49 rows fit; step 1's 11th call cannot be recorded
    picky_everywhere.clear()
    with monkeypatch.context() as full:
        full.setattr(runstore, "_connect", disk.connect)
        assert main(["optimize", str(path)]) == 1
    [line] = _error_lines(capsys.readouterr().err)
    run_dir = only_run(out)
    assert "cannot write run store" in line and "database or disk is full" in line
    assert f"--resume {run_dir.name}" in line
    counts = row_counts(run_dir)
    assert sum(counts.values()) == disk.written == 60  # every committed row is there
    # the run stopped once a call could not be recorded: only calls then in flight were lost
    billed = sum(len(backend.requests) for backend in picky_everywhere)
    # (how many rows of each kind fit depends on the order the engine writes them in)
    assert counts["llm_calls"] >= 1 and billed - counts["llm_calls"] <= 4  # 4: its concurrency

    assert main(["optimize", str(path), "--resume", run_dir.name]) == 0  # space freed
    got = outcome(run_dir)
    assert got["paid"] <= MAX_CALLS
    assert {k: got[k] for k in ("best", "best_val", "seed_test", "best_test")} == {
        k: expected[k] for k in ("best", "best_val", "seed_test", "best_test")
    }


def test_a_read_only_run_folder_is_one_line_and_the_run_stays_intact(
    tmp_path, monkeypatch, capsys, picky_everywhere
):
    path = write_task(tmp_path, '"fake:positive"')
    assert main(["optimize", str(path)]) == 0
    run_dir = only_run(tmp_path / "traces")
    before = row_counts(run_dir)
    capsys.readouterr()

    def read_only(lock_path: Path) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(lock_path))

    monkeypatch.setattr(lock_module, "_open_lock_file", read_only)
    assert main(["optimize", str(path), "--resume", run_dir.name]) == 1
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"promptopt: error: cannot write to run folder {str(run_dir)!r}")
    assert "Read-only file system" in line
    assert row_counts(run_dir) == before


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, capsys, picky_everywhere):
    path = write_task(tmp_path, '"fake:positive"')
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should go")
    assert main(["optimize", str(path), "--output", str(blocker / "traces")]) == 1
    [line] = _error_lines(capsys.readouterr().err)
    assert "cannot create run folder" in line and "Not a directory" in line

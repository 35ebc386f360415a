"""Finding runs on disk: list the runs of an output folder, resolve a run id or path to its folder.

A run is a folder ``<output_dir>/<run-id>/`` that holds ``run.sqlite``. Listing
reads each store without migrating or writing it, so it is safe on a run that
another process is still writing, and on a store from a newer promptopt.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptopt.errors import StoreError

__all__ = ["LATEST", "RUN_FILE", "RunInfo", "list_runs", "read_only", "resolve_run"]

RUN_FILE = "run.sqlite"
LATEST = "latest"  # resolves to the newest run of the output folder


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run as listed: ``calls`` counts backend calls (cache replays excluded);
    ``best_score`` is the latest checkpoint state's ``best_score`` (or ``best_val``), if any."""

    run_id: str
    path: Path
    task_name: str
    status: str
    created_at: str
    calls: int
    best_score: float | None


def read_only(db: Path) -> sqlite3.Connection:
    """A connection to a run store that reads only: no migration, no write, safe while the
    run is being written."""
    conn = sqlite3.connect(db, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


def _scalar(conn: sqlite3.Connection, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def _info(folder: Path) -> RunInfo:
    """Read one run's listing row; a store that cannot be read is listed as ``unreadable``."""
    run_id = folder.name
    try:
        with contextlib.closing(read_only(folder / RUN_FILE)) as conn:
            meta = {
                key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")
            }
            status = _scalar(conn, "SELECT status FROM status_events ORDER BY id DESC LIMIT 1")
            calls = _scalar(conn, "SELECT count(*) FROM llm_calls WHERE cached = 0")
            state = _scalar(conn, "SELECT state FROM checkpoints ORDER BY id DESC LIMIT 1")
    except (sqlite3.Error, ValueError):
        return RunInfo(run_id, folder, "", "unreadable", "", 0, None)
    saved = json.loads(state) if state else {}
    best = saved.get("best_score", saved.get("best_val"))
    return RunInfo(
        run_id=str(meta.get("run_id", run_id)),
        path=folder,
        task_name=str(meta.get("task_name", "")),
        status=status or "unknown",
        created_at=str(meta.get("created_at", "")),
        calls=int(calls or 0),
        best_score=float(best) if isinstance(best, int | float) else None,
    )


def _run_folders(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    return [child for child in output_dir.iterdir() if (child / RUN_FILE).is_file()]


def list_runs(output_dir: Path | str = "traces") -> list[RunInfo]:
    """The runs under ``output_dir``, newest first (a missing folder has none)."""
    infos = [_info(folder.resolve()) for folder in _run_folders(Path(output_dir))]
    return sorted(infos, key=lambda info: (info.created_at, info.run_id), reverse=True)


def _not_found(run: str | Path, output_dir: Path) -> StoreError:
    known = [info.run_id for info in list_runs(output_dir)[:5]]
    hint = f"; recent runs: {', '.join(known)}" if known else f"; {str(output_dir)!r} holds no runs"
    return StoreError(
        f"no run {str(run)!r}: not a run folder (one holding {RUN_FILE!r}) "
        f"and no run with that id in {str(output_dir)!r}{hint}"
    )


def resolve_run(run: str | Path, *, output_dir: Path | str = "traces") -> Path:
    """The absolute folder of a run given as a folder, its ``run.sqlite``, a run id,
    a unique prefix of a run id, or ``"latest"``; :class:`StoreError` if there is none."""
    out = Path(output_dir)
    path = Path(run)
    if path.is_file() and path.name == RUN_FILE:
        return path.parent.resolve()
    if (path / RUN_FILE).is_file():
        return path.resolve()
    name = str(run)
    if name and path.name == name and name not in (".", ".."):
        if (out / name / RUN_FILE).is_file():
            return (out / name).resolve()
        if name == LATEST:
            runs = list_runs(out)
            if runs:
                return runs[0].path
        matches = sorted(
            folder.name for folder in _run_folders(out) if folder.name.startswith(name)
        )
        if len(matches) == 1:
            return (out / matches[0]).resolve()
        if len(matches) > 1:
            raise StoreError(
                f"run id prefix {name!r} is ambiguous in {str(out)!r}: it matches {', '.join(matches)}"
            )
    if path.is_dir():
        raise StoreError(f"folder {str(path)!r} is not a run: it holds no {RUN_FILE!r}")
    raise _not_found(run, out)

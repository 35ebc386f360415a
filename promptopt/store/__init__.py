"""The run store (``traces/<run-id>/run.sqlite``) and finding runs on disk."""

from promptopt.store.lock import RunLock
from promptopt.store.migrations import MIGRATIONS, SCHEMA_VERSION
from promptopt.store.runs import RUN_FILE, RunInfo, list_runs, resolve_run
from promptopt.store.runstore import STATUSES, RunStore

__all__ = [
    "MIGRATIONS",
    "RUN_FILE",
    "SCHEMA_VERSION",
    "STATUSES",
    "RunInfo",
    "RunLock",
    "RunStore",
    "list_runs",
    "resolve_run",
]

"""The run store (``traces/<run-id>/run.sqlite``) and finding runs on disk."""

from promptopt.store.migrations import MIGRATIONS, SCHEMA_VERSION
from promptopt.store.runs import RUN_FILE, RunInfo, list_runs, resolve_run
from promptopt.store.runstore import STATUSES, RunStore

__all__ = [
    "MIGRATIONS",
    "RUN_FILE",
    "SCHEMA_VERSION",
    "STATUSES",
    "RunInfo",
    "RunStore",
    "list_runs",
    "resolve_run",
]

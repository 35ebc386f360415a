"""Finished runs kept in a benchmark's work folder, so that a rerun with the same
``--workdir`` skips what already finished under the same code and the same task.

A quality run of both settings with every peer takes most of a working day on this
machine; without this, a crash in its last hour (or the end of a session) lost every
finished run. A saved result is reused only when its key is equal: the fingerprint of
the code that made it (every source file of ``promptopt/`` and ``benchmarks/``, so any
change to the library, an optimizer's template or a benchmark invalidates it, and the
docs do not), and what the run was asked (its task file, the rows it read, its peer and
limits). A result is written whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_SOURCES = (("promptopt", (".py", ".txt", ".json")), ("benchmarks", (".py", ".txt")))


def code_fingerprint(root: Path = ROOT) -> str:
    """A digest of every source file of ``promptopt/`` and ``benchmarks/`` under ``root``
    (paths and bytes; caches and virtual environments left out)."""
    digest = hashlib.sha256()
    for path in sorted(_source_files(root)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _source_files(root: Path) -> Iterable[Path]:
    for folder, suffixes in _SOURCES:
        for here, dirs, files in os.walk(root / folder):
            # hidden folders (the peers' .venv) and caches are not the project's code
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            yield from (Path(here) / f for f in files if f.endswith(suffixes))


def files_digest(paths: Iterable[Path]) -> str:
    """A digest of some files' bytes (a run's data), in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def load(path: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The result saved at ``path`` under an equal ``key``, else None."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != json.loads(json.dumps(key)):
        return None
    result = saved.get("result")
    return result if isinstance(result, dict) else None


def save(path: Path, key: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Write ``result`` under ``key`` to ``path`` atomically (a crash leaves the old file
    or none, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"key": key, "result": result}, indent=1), encoding="utf-8")
    os.replace(partial, path)

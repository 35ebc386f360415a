"""Train/test split by input, ordering, and writing JSON lines deterministically.

:func:`is_test` puts a whole group (one input, or one meta-prompt) on one side, by a
hash of the group and the split seed: no input is on both sides, the same runs and
seed always give the same split, and no group needs to be remembered.

:class:`RowWriter` writes each side's rows as JSON lines with sorted keys. In input
order rows go straight to the file; in curriculum order they pass through a
temporary SQLite table sorted by rank (largest margin first, then the order they
came in), so memory stays bounded however many rows there are. Each file appears
complete or not at all (written to a temporary name, then renamed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from promptopt.errors import ConfigError

__all__ = ["RowWriter", "dumps", "is_test", "test_path_for"]

_SIDES = ("train", "test")


def is_test(group: str, *, fraction: float, seed: int) -> bool:
    """Whether ``group`` goes to the test side (about ``fraction`` of all groups do)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def test_path_for(path: Path) -> Path:
    """``pairs.jsonl`` -> ``pairs.test.jsonl``."""
    return path.with_name(f"{path.stem}.test{path.suffix or '.jsonl'}")


def dumps(row: dict[str, Any]) -> str:
    """One JSON line: sorted keys, no ASCII escaping, so the same rows give the same bytes."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True, allow_nan=False)


class RowWriter:
    """Writes rows to a train file and, optionally, a test file, in input or curriculum order."""

    def __init__(self, train: Path, test: Path | None, *, curriculum: bool) -> None:
        self.paths = {"train": train, "test": test}
        self.counts = dict.fromkeys(_SIDES, 0)
        self._curriculum = curriculum
        self._files: dict[str, IO[str]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="promptopt-export-")
        self._sorter: sqlite3.Connection | None = None
        if curriculum:
            self._sorter = sqlite3.connect(Path(self._tmp.name) / "rows.sqlite")
            self._sorter.execute("CREATE TABLE rows (side TEXT, rank REAL, seq INTEGER, line TEXT)")
        for side, path in self.paths.items():
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._files[side] = open(_partial(path), "w", encoding="utf-8", newline="\n")  # noqa: SIM115
                except OSError as exc:
                    self._discard()
                    raise ConfigError(f"cannot write {str(path)!r}: {exc}") from exc

    def write(self, row: dict[str, Any], *, test: bool, rank: float) -> None:
        side = "test" if test and "test" in self._files else "train"
        line = dumps(row)
        self.counts[side] += 1
        if self._sorter is not None:
            self._sorter.execute(
                "INSERT INTO rows VALUES (?, ?, ?, ?)", (side, -rank, self.counts[side], line)
            )
        else:
            self._files[side].write(line + "\n")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        if self._sorter is not None:
            self._sorter.execute("CREATE INDEX rows_order ON rows (side, rank, seq)")
            for side, file in self._files.items():
                for (line,) in self._sorter.execute(
                    "SELECT line FROM rows WHERE side = ? ORDER BY rank, seq", (side,)
                ):
                    file.write(line + "\n")
        for side, file in self._files.items():
            file.close()
            os.replace(_partial(self.paths[side]), self.paths[side])  # type: ignore[arg-type]
        self._close_sorter()

    def _discard(self) -> None:
        for side, file in self._files.items():
            file.close()
            with contextlib.suppress(OSError):
                os.remove(_partial(self.paths[side]))  # type: ignore[arg-type]
        self._close_sorter()

    def _close_sorter(self) -> None:
        if self._sorter is not None:
            self._sorter.close()
            self._sorter = None
        self._tmp.cleanup()


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")

"""Examples, dataset files, and the train/val/test splits of a task.

A dataset file is JSON Lines (one object per line) or CSV (a header row, read
with the :mod:`csv` module). Each row becomes an :class:`Example` whose
``inputs`` are keyed by placeholder name (``data.inputs`` may rename columns)
and whose ``target`` is the gold column.

:func:`load_splits` is deterministic: with ``data.path`` the rows are shuffled
by ``random.Random(split.seed, defaulting to the task seed)`` and cut into
train, val and test in that order, each keeping the shuffled order; explicit
files are taken as they are, up to their limit. An example's id is
``"<split>-<row index in its file>"`` (0-based, header excluded), so ids are
stable across runs with the same seed.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptopt.errors import DataError

if TYPE_CHECKING:
    from promptopt.task.spec import DataSpec, TaskSpec

__all__ = [
    "SPLIT_NAMES",
    "Example",
    "Row",
    "Splits",
    "data_files",
    "load_splits",
    "read_rows",
    "to_examples",
]

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled (or unlabelled) example: ``inputs`` by placeholder name, and ``target``."""

    id: str
    inputs: dict[str, Any] = field(hash=False)
    target: Any = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class Splits:
    """The three disjoint splits of a task."""

    train: tuple[Example, ...] = ()
    val: tuple[Example, ...] = ()
    test: tuple[Example, ...] = ()

    def __getitem__(self, name: str) -> tuple[Example, ...]:
        if name not in SPLIT_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def __len__(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)


@dataclass(frozen=True, slots=True)
class Row:
    """One parsed data row with the place it came from, for error messages."""

    index: int
    line: int
    values: dict[str, Any]


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def data_files(spec: TaskSpec) -> dict[str, Path]:
    """The task's data files resolved against its folder, keyed by field (``path``, ``train``, ...)."""
    return {name: (spec.base_dir / file) for name, file in spec.data.files().items()}


def read_rows(path: Path, *, fmt: str) -> list[Row]:
    """Every row of a .jsonl or .csv file; raises DataError naming the file and line of a bad row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{_shown(path)}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{_shown(path)}: cannot read: {exc}") from None
    if fmt == "jsonl":
        return _jsonl_rows(text, path)
    if fmt == "csv":
        return _csv_rows(text, path)
    raise DataError(f"{_shown(path)}: unknown data format {fmt!r}; expected 'jsonl' or 'csv'")


def _jsonl_rows(text: str, path: Path) -> list[Row]:
    rows: list[Row] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{_shown(path)}: line {line_no}: invalid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            kind = type(value).__name__
            raise DataError(f"{_shown(path)}: line {line_no}: expected a JSON object, got {kind}")
        rows.append(Row(len(rows), line_no, value))
    return rows


def _csv_rows(text: str, path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text))
    rows: list[Row] = []
    try:
        for values in reader:
            if None in values:
                raise DataError(
                    f"{_shown(path)}: line {reader.line_num}: more fields than the header"
                )
            if any(value is None for value in values.values()):
                raise DataError(
                    f"{_shown(path)}: line {reader.line_num}: fewer fields than the header"
                )
            rows.append(Row(len(rows), reader.line_num, dict(values)))
    except csv.Error as exc:
        raise DataError(f"{_shown(path)}: line {reader.line_num}: invalid CSV: {exc}") from None
    return rows


def to_examples(
    rows: Sequence[Row], *, data: DataSpec, path: Path, split: str | None = None
) -> list[Example]:
    """Map rows to examples; ``split`` names the id prefix (``row`` until a split is known)."""
    columns: Mapping[str, str] = data.input_map
    examples = []
    for row in rows:
        for column in (*columns.values(), *([data.target] if data.target else [])):
            if column not in row.values:
                have = ", ".join(repr(name) for name in row.values)
                raise DataError(
                    f"{_shown(path)}: line {row.line}: missing column {column!r} (has {have})"
                )
        inputs = {name: row.values[column] for name, column in columns.items()}
        target = row.values[data.target] if data.target else None
        examples.append(Example(f"{split or 'row'}-{row.index}", inputs, target))
    return examples


def load_splits(spec: TaskSpec) -> Splits:
    """The train/val/test examples of a task; raises DataError for unreadable files or rows."""
    data = spec.data
    files = data_files(spec)
    if "path" in files:
        assert data.split is not None and data.path is not None  # guaranteed by DataSpec
        path = files["path"]
        rows = read_rows(path, fmt=data.format_of(data.path))
        examples = to_examples(rows, data=data, path=path)
        if data.split.total > len(examples):
            raise DataError(
                f"{_shown(path)}: has {len(examples)} rows, fewer than the "
                f"{data.split.total} that data.split asks for"
            )
        seed = spec.seed if data.split.seed is None else data.split.seed
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        cuts: dict[str, tuple[Example, ...]] = {}
        start = 0
        for name in SPLIT_NAMES:
            size = getattr(data.split, name)
            chosen = order[start : start + size]
            cuts[name] = tuple(_renamed(examples[i], name) for i in chosen)
            start += size
        return Splits(**cuts)
    parts: dict[str, tuple[Example, ...]] = {}
    for name in SPLIT_NAMES:
        if name not in files:
            continue
        file = getattr(data, name)
        rows = read_rows(files[name], fmt=data.format_of(file))
        limit = getattr(data.limits, name)
        taken = rows if limit is None else rows[:limit]
        parts[name] = tuple(to_examples(taken, data=data, path=files[name], split=name))
    return Splits(**parts)


def _renamed(example: Example, split: str) -> Example:
    index = example.id.rpartition("-")[2]
    return Example(f"{split}-{index}", example.inputs, example.target)


def in_file_order(scores: Mapping[str, float]) -> list[float]:
    """Per-example ``scores`` of one split (keyed by example id) as a list in the order of
    the split's file: the row index an id ends with. A peer that reads the same file
    scores its rows in that order, so the two lists pair row by row."""
    return [scores[i] for i in sorted(scores, key=lambda i: int(i.rpartition("-")[2]))]

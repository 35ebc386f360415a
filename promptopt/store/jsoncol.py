"""JSON columns of the run store: encoding, with credential-like fields redacted (by
:func:`promptopt.secrets.redact_fields`), and decoding a row's JSON columns."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from promptopt.errors import StoreError
from promptopt.secrets import redact_fields

__all__ = ["decoded", "json_text"]


def _plain(value: Any) -> Any:
    """JSON fallback for values that are data but not JSON types."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_text(value: Any, *, what: str, scrub: bool = False) -> str:
    """``value`` as JSON text; ``scrub`` redacts credential fields (requests, responses, task)."""
    try:
        data = redact_fields(value) if scrub else value
        return json.dumps(data, ensure_ascii=False, sort_keys=True, default=_plain)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {what!r} as JSON: {exc}") from exc


def decoded(row: sqlite3.Row, **columns: Any) -> dict[str, Any]:
    """``row`` as a dict; a column named ``True`` is JSON-decoded, one named with a type is cast."""
    out = dict(row)
    for column, how in columns.items():
        if out.get(column) is not None:
            out[column] = json.loads(out[column]) if how is True else how(out[column])
    return out

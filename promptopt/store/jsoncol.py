"""JSON columns of the run store: encoding, with credential-like fields redacted, and decoding
a row's JSON columns."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptopt.errors import StoreError

__all__ = ["decoded", "json_text", "redact"]

# Field names whose values are credentials; replaced wherever they appear in stored JSON.
_SECRET_FIELDS = frozenset(
    {"api_key", "apikey", "api-key", "x-api-key", "authorization", "proxy-authorization",
     "password", "secret", "client_secret", "access_token", "bearer"}
)  # fmt: skip
_REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """A copy of ``value`` with every credential-like field's value redacted."""
    if isinstance(value, Mapping):
        return {
            key: _REDACTED if str(key).lower() in _SECRET_FIELDS else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


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
        data = redact(value) if scrub else value
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

"""The base of every task-file model (frozen, no unknown keys), :class:`FieldIssue`, and the
checks several of the models share.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["NAME_RE", "FieldIssue", "Frozen", "check_regex"]

NAME_RE = re.compile(r"^[a-z0-9_-]+$")


class FieldIssue(ValueError):
    """A validation failure about ``field``, dotted relative to the model that raised it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"regex {value!r} does not compile: {exc}") from None
    return value

"""The ``{name}`` placeholders of a prompt template: the one parser of them.

A template is filled with ``str.format_map`` (see :mod:`promptopt.task.program`),
so its fields are read the way ``str.format`` reads them: ``{{`` and ``}}`` are
literal braces, a field runs from ``{`` to its matching ``}``.

- :func:`template_fields` is for a template a person wrote (``task.yaml``): a
  malformed one, or a field that is not a plain name, is a ValueError;
- :func:`placeholders` is for any value, such as a text an optimizer rewrites: it
  never raises, and only a plain ``{name}`` counts (a value that is no template,
  a stray brace or JSON in the text has none), so a rewrite that keeps ``{name}``
  written as it was keeps the placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["placeholders", "template_fields"]

_BRACE = re.compile(r"[{}]")
_END_OF_NAME = re.compile(r"[!:]")


def template_fields(template: str) -> tuple[str, ...]:
    """The ``{placeholder}`` names of a ``str.format`` template, in order, without repeats.

    Raises ValueError for a malformed template or a placeholder that is not a plain name.
    """
    return tuple(dict.fromkeys(_names(template, strict=True)))


def placeholders(text: Any) -> list[str]:
    """The plain ``{name}`` placeholders of a prompt template, in order, each once;
    none for a value that is not a string."""
    return list(dict.fromkeys(_names(text, strict=False))) if isinstance(text, str) else []


def _names(template: str, *, strict: bool) -> Iterator[str]:
    """The field names of ``template`` in order; ``strict`` raises where ``str.format`` would
    and on a name that is not an identifier, otherwise those fields are passed over."""
    for field in _fields(template, strict=strict):
        name = _field_name(field, strict=strict)
        if name.isidentifier():
            yield name
        elif strict:
            raise ValueError(f"placeholder {{{name}}} must be a plain field name such as {{text}}")


def _fields(template: str, *, strict: bool) -> Iterator[str]:
    """What stands between each field's braces, skipping escaped braces (``{{``, ``}}``)."""
    at = 0
    while (brace := _BRACE.search(template, at)) is not None:
        at = brace.start()
        if template[at : at + 2] in ("{{", "}}"):
            at += 2
            continue
        end = _closing(template, at) if template[at] == "{" else -1
        if end < 0:  # a single '}', or a '{' never closed
            if strict:
                raise ValueError(f"unmatched {template[at]!r} at character {at}")
            at += 1
            continue
        yield template[at + 1 : end]
        at = end + 1


def _closing(template: str, start: int) -> int:
    """Where the field opened at ``start`` closes (braces nest, as in a format spec), or -1."""
    depth = 0
    for at in range(start, len(template)):
        depth += {"{": 1, "}": -1}.get(template[at], 0)
        if depth == 0:
            return at
    return -1


def _field_name(field: str, *, strict: bool) -> str:
    """The name of a field: strictly, as ``str.format`` reads it (before a ``!conversion`` or a
    ``:spec``); otherwise the whole field, so ``{x:>5}`` is no plain placeholder."""
    if not strict:
        return field
    name = _END_OF_NAME.split(field, maxsplit=1)[0]
    conversion = field[len(name) + 1 :] if field[len(name) : len(name) + 1] == "!" else None
    if conversion is not None and (not conversion or conversion[1:2] not in ("", ":")):
        raise ValueError(f"field {{{field}}} needs one conversion letter after '!'")
    return name

"""Reading the JSON object an optimizer model was asked to reply with, tolerantly.

Models wrap JSON in prose and code fences, use single quotes, leave trailing
commas, write Python's ``True``/``None`` or JSON's ``true``/``null`` in the
wrong dialect, and put raw newlines inside strings. :func:`parse_json_reply`
finds each balanced ``{...}`` in the reply, in order (braces inside strings do
not count), and returns the first one that reads as an object through, in turn,
:func:`json.loads` (control characters allowed), the same without trailing
commas, and :func:`ast.literal_eval` after JSON's literals become Python's.
Anything else raises :class:`~promptopt.errors.ReplyParseError` with a short
reason that can be shown to the model when asking for a repair.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from promptopt.errors import ReplyParseError

__all__ = ["parse_json_reply"]

_QUOTES = frozenset("\"'")
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}
_WORD = re.compile(r"[A-Za-z_]\w*")
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def parse_json_reply(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` as a dict; raises ReplyParseError with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise ReplyParseError("the reply is empty")
    first_error = ""
    found = False
    for chunk in _objects(text):
        found = True
        try:
            return _read(chunk)
        except ReplyParseError as exc:
            first_error = first_error or str(exc)
    if found:
        raise ReplyParseError(first_error)
    if "{" in text:
        raise ReplyParseError("the JSON object is never closed (the reply may be cut off)")
    raise ReplyParseError("the reply holds no JSON object")


def _objects(text: str) -> Iterator[str]:
    """Every top-level balanced ``{...}`` of ``text``, in order; quotes are respected."""
    start = text.find("{")
    while start != -1:
        end = _closing(text, start)
        if end is None:
            return
        yield text[start : end + 1]
        start = text.find("{", end + 1)


def _closing(text: str, start: int) -> int | None:
    depth, quote, escaped = 0, "", False
    for at in range(start, len(text)):
        char = text[at]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in _QUOTES:
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return at
    return None


def _read(chunk: str) -> dict[str, Any]:
    errors = []
    for attempt in (chunk, _outside_strings(chunk, _drop_trailing_commas)):
        try:
            value = json.loads(attempt, strict=False)
        except RecursionError:
            raise ReplyParseError("the JSON object is nested too deeply") from None
        except ValueError as exc:
            errors.append(f"not valid JSON: {exc.args[0] if exc.args else exc}")
            continue
        return _as_object(value)
    try:
        value = ast.literal_eval(_outside_strings(chunk, _python_words))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ReplyParseError(errors[0]) from None
    return _as_object(value)


def _as_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplyParseError(f"expected a JSON object, got {type(value).__name__}")
    return {str(key): item for key, item in value.items()}


def _outside_strings(chunk: str, edit: Callable[[str], str]) -> str:
    """``chunk`` with ``edit`` applied to each stretch of text outside string literals."""
    out: list[str] = []
    plain_from, string_from, quote, escaped = 0, 0, "", False
    for at, char in enumerate(chunk):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
                plain_from = at + 1
                out.append(chunk[string_from : at + 1])
        elif char in _QUOTES:
            out.append(edit(chunk[plain_from:at]))
            quote, string_from = char, at
    if quote:  # unterminated string: leave the rest alone
        out.append(chunk[string_from:])
    else:
        out.append(edit(chunk[plain_from:]))
    return "".join(out)


def _drop_trailing_commas(stretch: str) -> str:
    # a trailing comma and its closing bracket are always in the same stretch:
    # only whitespace can stand between them
    return _TRAILING_COMMA.sub(r"\1", stretch)


def _python_words(stretch: str) -> str:
    return _WORD.sub(lambda m: _JSON_WORDS.get(m.group(0), m.group(0)), stretch)

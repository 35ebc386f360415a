"""Shortening text for people and models: the one home of truncation.

Two ways to cut, both keeping the start of the text:

- :func:`shorten` fits the result, marker included, within ``limit`` characters
  (labels in drawings, values quoted in error messages);
- :func:`clip` keeps the first ``limit`` characters and then says how much was
  cut (text an optimizer's model or a stored trace reads, where the size matters).

:func:`one_line` collapses whitespace first where a text must stay on one line.
This module imports nothing from the project, so every layer may use it.
"""

from __future__ import annotations

__all__ = ["MORE_CHARS", "clip", "one_line", "shorten"]

# how much a clipped text lost, for a reader that needs to know it was cut
MORE_CHARS = " ... [{more} more chars]"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def shorten(text: str, limit: int, *, marker: str = "…") -> str:
    """``text`` if it has at most ``limit`` characters, else its start then ``marker``,
    ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(marker), 0)] + marker


def clip(text: str, limit: int, *, marker: str = MORE_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its first ``limit`` then
    ``marker``, formatted with ``more`` (the characters cut) and ``total`` (the length)."""
    if len(text) <= limit:
        return text
    return text[:limit] + marker.format(more=len(text) - limit, total=len(text))

"""What a version an optimizer model wrote copies instead of being a prompt of its own.

:func:`holds_quote` says whether a version holds a line of its request or a run of a
shown input's words (:func:`input_runs`); :func:`same_words` whether two texts differ in
case and punctuation only; :func:`drop_repeats` reads a sampled loop (the same lines
written again until ``max_tokens``) once.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

__all__ = ["drop_repeats", "holds_quote", "input_runs", "same_words", "words"]

_WORDS = re.compile(r"[^\W_]+")
_INPUT_MIN_WORDS, _INPUT_RUN = 3, 6  # a shorter input is too common to copy; a longer one, in runs


def words(text: str) -> tuple[str, ...]:
    """The words of ``text``, lowercase (punctuation and spacing aside)."""
    return tuple(_WORDS.findall(text.lower()))


def same_words(a: str, b: str) -> bool:
    """Whether two texts have the same words in the same order (case and punctuation aside)."""
    return words(a) == words(b)


def input_runs(inputs: Iterable[Mapping[str, Any]], *, allowed: str = "") -> list[tuple[str, ...]]:
    """The word runs showing a version copied an input shown (``inputs``: examples' fields): a
    whole input of 3 to 6 words, or 6 in a row of a longer one, less those ``allowed`` (the
    current value) holds; an OPRO text "describes a movie that is both daring and beautifully made"."""
    runs: set[tuple[str, ...]] = set()
    for fields in inputs:
        for value in fields.values():
            found = words(str(value))
            if len(found) >= _INPUT_MIN_WORDS:
                n = min(len(found), _INPUT_RUN)
                runs.update(found[i : i + n] for i in range(len(found) - n + 1))
    kept = words(allowed)
    held = {kept[i : i + n] for n in {len(r) for r in runs} for i in range(len(kept) - n + 1)}
    return sorted(runs - held)


def holds_quote(text: str, quoted: Collection[str | tuple[str, ...]]) -> bool:
    """Whether ``text`` holds one of ``quoted``: a string as it is written, a tuple of words
    as a run of the text's words (:func:`words`)."""
    found = words(text) if any(isinstance(q, tuple) for q in quoted) else ()
    for q in quoted:
        if isinstance(q, str):
            if q in text:
                return True
        elif any(found[i : i + len(q)] == q for i in range(len(found) - len(q) + 1)):
            return True
    return False


_LIST_MARK = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.)]|#+)\s*")
_REPEAT_MIN = 12  # shorter lines ("Rules:", "Examples:") repeat in texts written on purpose


def drop_repeats(text: str) -> str:
    """``text`` without what a model wrote twice: sampled replies of small models can fall
    into a loop, writing the same block of lines again until ``max_tokens``.

    Lines are compared without list marks (a loop renumbers its rules), spacing or case.
    A line of 12 characters or more that was written before goes; where one did, so does a
    last line that begins a longer one written before (cut off mid-repeat). Shorter lines
    ("Rules:", "{text}") are often written twice on purpose: they go only in the loop's
    tail, the lines after the last one written once, where they were all written before
    too. Blank lines left in a row are one. A text without repeated lines comes back
    unchanged.
    """
    lines = text.splitlines()
    keys = [" ".join(_LIST_MARK.sub("", line).split()).casefold() for line in lines]
    long_seen: list[str] = []
    short_seen: set[str] = set()
    repeat = [False] * len(lines)  # a long line written before: it goes wherever it is
    echo = [False] * len(lines)  # blank, or a short line written before: it goes in the tail
    for i, key in enumerate(keys):
        if len(key) < _REPEAT_MIN:
            echo[i] = not key or key in short_seen
            short_seen.add(key)
        elif key in long_seen:
            repeat[i] = True
        else:
            long_seen.append(key)
    if not any(repeat):
        return text
    if keys[-1] and any(s.startswith(keys[-1]) and s != keys[-1] for s in long_seen):
        repeat[-1] = True  # the loop's last repeat, cut off by max_tokens
    end = len(lines)
    while end and (repeat[end - 1] or echo[end - 1]):
        end -= 1
    if not any(repeat[end:]):
        end = len(lines)  # no loop at the end: the text's own last lines stay
    kept: list[str] = []
    for line, dropped in zip(lines[:end], repeat[:end], strict=True):
        if dropped or (not line.strip() and (not kept or not kept[-1].strip())):
            continue
        kept.append(line)
    return "\n".join(kept).strip()

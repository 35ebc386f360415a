"""What a prompt's text says of the task's labels: the lists of labels it writes.

A text that lists the answers ("Reply with one word: positive or negative") tells the model
which answers exist, and a rewrite that changes the list moves the answers with it. Two
changes were seen in optimizers' winners: a label that is not one of the program's
``choices`` ("positive, negative or neutral"), and a list that leaves a choice out (SPO's
TREC winner listed five of the six classes and never answered the sixth; label-free, it
could not see what that cost). :func:`label_notes` says so in words for a run's summary.

A list is single words (quoted or not) joined by commas, ``or``, ``/`` or ``|``; one that
names more than half of the choices is the label list ("like a human, place, entity, or
number" describes a question with label words, and is not). A word between two choices is
listed with them; one after the last choice (or before the first) is, only when ``or``,
``/`` or ``|`` joins it: after a bare comma it may be the sentence going on ("positive or
negative, then stop"). A label list leaves out the choices the text never names (a text of
rules per label may list a few of them at a time). Choices of more than one word are never
read in a list. This module imports nothing from the project.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dropped_choices", "label_notes", "listed_labels", "program_texts"]

_ITEM = r"[A-Za-z][\w-]*"
_SEP = r"\s*(?:,\s*or\s+|,\s*|\s+or\s+|/|\|)\s*"
_QUOTED = rf"[\"'`]?{_ITEM}[\"'`]?"  # labels are often quoted: "positive" or "negative"
_LIST = re.compile(rf"(?<![\w-]){_QUOTED}(?:{_SEP}{_QUOTED})+(?![\w-])")
_SEP_ONLY = re.compile(_SEP)


def listed_labels(text: str, choices: Sequence[str]) -> list[tuple[list[str], list[str]]]:
    """Each list of labels in ``text``: the choices it names and the other words listed with
    them (as written, in order), lower case aside when matching."""
    known = {c.casefold(): c for c in choices if re.fullmatch(_ITEM, c)}
    found = []
    for match in _LIST.finditer(text):
        items = [item.strip("\"'`") for item in _SEP_ONLY.split(match.group(0))]
        seps = _SEP_ONLY.findall(match.group(0))
        hits = [i for i, item in enumerate(items) if item.casefold() in known]
        if len({items[i].casefold() for i in hits}) < 2:
            continue
        start, stop = hits[0], hits[-1]
        while start > 0 and not _bare_comma(seps[start - 1]):
            start -= 1
        while stop < len(items) - 1 and not _bare_comma(seps[stop]):
            stop += 1
        named = list(dict.fromkeys(known[items[i].casefold()] for i in hits))
        others = [w for w in items[start : stop + 1] if w.casefold() not in known]
        found.append((named, list(dict.fromkeys(others))))
    return found


def dropped_choices(old: Any, new: Any, choices: Sequence[str]) -> list[str]:
    """The ``choices`` that text ``old`` names (as words, in any case) and ``new`` never does."""
    if not isinstance(old, str) or not isinstance(new, str):
        return []
    return [c for c in choices if _named(old, c) and not _named(new, c)]


def _named(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text, re.IGNORECASE) is not None


def _bare_comma(sep: str) -> bool:
    return "," in sep and not re.search(r"\bor\b", sep)


def program_texts(program: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The values a prompt program answers with under ``params``: the ``system`` and ``user``
    lines of its ``program`` section (a task as stored), the candidate's own over them (a
    candidate holds only the trainable parameters)."""
    fixed = {}
    if isinstance(program, Mapping):
        fixed = {k: program[k] for k in ("system", "user") if isinstance(program.get(k), str)}
    return {**fixed, **params}


def label_notes(params: Mapping[str, Any], choices: Sequence[str]) -> list[str]:
    """Notes on the label lists of ``params``' text values: a word listed with the choices
    that is not one, and a choice left out of a label list and never named (see the
    module doc)."""
    notes = []
    for name, value in params.items():
        if not isinstance(value, str):
            continue
        outside: dict[str, None] = {}
        left_out: dict[str, None] = {}
        for named, others in listed_labels(value, choices):
            if 2 * len(named) <= len(choices):
                continue  # a few label words in prose, not the label list
            outside.update(dict.fromkeys(others))
            left_out.update(dict.fromkeys(c for c in choices if not _named(value, c)))
        every = ", ".join(choices)
        if outside:
            words = ", ".join(repr(w) for w in outside)
            notes.append(f"the best's {name!r} lists {words} with the labels, though the "
                         f"choices are {every}")  # fmt: skip
        if left_out:
            words = ", ".join(repr(w) for w in left_out)
            notes.append(f"the best's {name!r} lists the labels without {words}: its answers "
                         f"may lean away from {'it' if len(left_out) == 1 else 'them'}")  # fmt: skip
    return notes

"""The rows written for one group, in each format (``FORMATS``), and their metadata.

Every row holds chat messages as TRL's conversational format does:

- ``trl``: ``{"prompt": [...], "chosen": [assistant], "rejected": [assistant]}``; the
  prompt is the exact messages the rejected side was sent (system, exemplar turns,
  user), so a trainer sees what the model saw when it answered worse;
  ``metadata.same_prompt`` says whether the chosen side was sent the same messages;
- ``kto``: ``{"prompt", "completion", "label"}``: both sides of every pair, each with
  the messages it was sent; a response chosen in one pair and rejected in another is
  left out (its label is not clear);
- ``listwise``: ``{"responses": [...]}``: every distinct response of an input (or
  meta-prompt), best first, each with its prompt, completion, score and rank.

Metadata has the same shape on every row and level (strings, floats, booleans), so
``datasets`` loads any mix of files; ``metadata.input`` is the input as JSON text;
``metadata.confidence`` is the share of a judge's votes the chosen side won at the
judge level, and 1.0 where a metric scored both sides.
Every row comes with the number the curriculum order sorts by: a pair's margin
(for a list, the best score minus the worst).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from promptopt.export.mining import Item, Pair
from promptopt.export.sources import RecordedCall

__all__ = ["PAIR_FORMATS", "Row", "input_text", "kto_rows", "listwise_rows", "side", "trl_rows"]

Row = tuple[dict[str, Any], float]  # a row and its curriculum rank


def _call(item: Item) -> RecordedCall:
    found = item.source.call(item.prompt_key)
    assert found is not None, "pairs are accepted only when both requests are recorded"
    return found


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def side(item: Item) -> dict[str, Any]:
    """Where one response came from, and its score."""
    return {"run": item.run, "candidate": item.candidate, "parent": item.parent,
            "split": item.split, "example": item.example, "trace": item.trace,
            "model": _call(item).model, "score": float(item.score)}  # fmt: skip


def _about(level: str, task: str, node: str, inputs: str, confidence: float) -> dict[str, Any]:
    return {"level": level, "task": task, "node": node, "input": inputs,
            "confidence": float(confidence)}  # fmt: skip


def trl_rows(pairs: Iterable[Pair], *, task: str, inputs: str) -> Iterator[Row]:
    for pair in pairs:
        shown, other = _call(pair.rejected), _call(pair.chosen)
        meta = _about(pair.level, task, pair.chosen.node, inputs, pair.confidence) | {
            "margin": float(pair.margin),
            "same_prompt": shown.messages == other.messages,
            "chosen": side(pair.chosen),
            "rejected": side(pair.rejected),
        }
        row = {"prompt": shown.chat(), "chosen": _assistant(pair.chosen.completion),
               "rejected": _assistant(pair.rejected.completion), "metadata": meta}  # fmt: skip
        yield row, pair.margin


def kto_rows(pairs: Iterable[Pair], *, task: str, inputs: str) -> Iterator[Row]:
    rows: dict[tuple[tuple[tuple[str, str], ...], str], Row] = {}
    labels: dict[tuple[tuple[tuple[str, str], ...], str], set[bool]] = {}
    for pair in pairs:
        for item, label in ((pair.chosen, True), (pair.rejected, False)):
            call = _call(item)
            key = (call.messages, item.completion)
            labels.setdefault(key, set()).add(label)
            if key not in rows:
                meta = _about(pair.level, task, item.node, inputs, pair.confidence)
                meta["response"] = side(item)
                row = {"prompt": call.chat(), "completion": _assistant(item.completion),
                       "label": label, "metadata": meta}  # fmt: skip
                rows[key] = (row, pair.margin)
    for key, kept in rows.items():
        if len(labels[key]) == 1:
            yield kept


def listwise_rows(items: Iterable[Item], *, level: str, task: str, inputs: str) -> Iterator[Row]:
    best: dict[tuple[str, str], Item] = {}
    for item in sorted(items, key=Item.order):
        known = best.get((item.prompt_key, item.completion))
        if (known is None or item.score > known.score) and item.source.call(item.prompt_key):
            best[(item.prompt_key, item.completion)] = item
    ranked = sorted(best.values(), key=lambda it: (-it.score, it.order()))
    if len(ranked) < 2 or ranked[0].score == ranked[-1].score:
        return  # nothing to rank
    responses = [
        {"prompt": _call(item).chat(), "completion": _assistant(item.completion),
         "score": float(item.score), "rank": rank, "metadata": side(item)}
        for rank, item in enumerate(ranked, 1)
    ]  # fmt: skip
    row = {"responses": responses, "metadata": _about(level, task, "", inputs, 1.0)}
    yield row, ranked[0].score - ranked[-1].score


PAIR_FORMATS: dict[str, Callable[..., Iterator[Row]]] = {"trl": trl_rows, "kto": kto_rows}
"""Formats built from mined pairs; ``listwise`` is built from a group's responses."""


def input_text(group: str) -> str:
    """The input part of a group key (JSON of the inputs), or '' for a meta-prompt."""
    _, sep, inputs = group.partition("\x00")
    return inputs if sep else ""

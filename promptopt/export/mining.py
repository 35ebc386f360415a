"""Mining preference pairs inside one group (one input, or one meta-prompt).

Every response read from a run is an :class:`Item`: who answered (run, candidate,
example, trace), the key of the request it answered, its text and the score it
earned. A :class:`Pair` is a better and a worse item whose scores differ by at
least the margin.

Pairs come out largest margin first, so a cap on pairs per input keeps the clearest
ones (the first pair of a group is always its best against its worst, as in
MCTS-DPO). The walk over (better, worse) positions is a heap over two sorted lists,
so a capped group costs about ``cap * log`` steps however many responses it holds.

- :func:`mine` (program outputs, optimizer replies): the same text is one chosen
  response, scored by its worst occurrence; the same text for the same request is
  one rejected response, scored by its best; so every pair holds for every
  occurrence it stands for, and no two pairs repeat (prompt, chosen, rejected).
  A pair cites, as its chosen side, that text answered to the rejected side's very
  request when one exists (calibration variants share requests), so that its two
  sides were sent the same messages.
- :func:`mine_traces` (LLM nodes of traced workflows): for two traces of one input
  whose scores differ, the credit goes to the first LLM call, in the better trace's
  order, whose reply differs from the worse trace's call at the same place (same
  node, same occurrence). Later calls that differ ran on inputs that already
  differed, so they get no pair; a pair of traces whose LLM replies are all equal
  (only code differed) gives none.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Item", "Pair", "TraceItem", "by_margin", "mine", "mine_traces"]


@dataclass(slots=True, eq=False)  # not frozen: a million of them are made per export
class Item:
    """One scored response; ``prompt_key`` is the key of the request it answered."""

    source: Any = field(compare=False, repr=False)  # the run it was read from
    run: str
    candidate: str
    score: float
    completion: str
    prompt_key: str
    split: str = ""
    example: str = ""
    trace: str = ""
    parent: str = ""
    node: str = ""

    def order(self) -> tuple[str, ...]:
        """The stable tie-breaker: where the response was recorded."""
        return (self.run, self.candidate, self.split, self.example, self.trace, self.prompt_key)


@dataclass(frozen=True, slots=True)
class Pair:
    """A chosen and a rejected response of one group, at one level."""

    level: str
    chosen: Item
    rejected: Item

    @property
    def margin(self) -> float:
        return self.chosen.score - self.rejected.score


@dataclass(frozen=True, slots=True)
class TraceItem:
    """One stored trace of an input: its score and its LLM calls in order, as
    ``((node name, occurrence), request key)``."""

    source: Any = field(compare=False, repr=False)
    run: str
    trace: str
    candidate: str
    split: str
    example: str
    score: float
    steps: tuple[tuple[tuple[str, int], str], ...]

    def order(self) -> tuple[str, ...]:
        return (self.run, self.candidate, self.split, self.example, self.trace)


def by_margin(
    high: Sequence[float], low: Sequence[float], margin: float
) -> Iterator[tuple[int, int]]:
    """Positions ``(i, j)`` with ``high[i] - low[j] >= margin``, largest difference first
    (ties in position order); ``high`` must be sorted descending and ``low`` ascending."""
    if not high or not low:
        return
    heap = [(low[0] - high[0], 0, 0)]
    seen = {(0, 0)}
    while heap:
        negative, i, j = heapq.heappop(heap)
        if -negative < margin:
            return
        yield i, j
        for a, b in ((i + 1, j), (i, j + 1)):
            if a < len(high) and b < len(low) and (a, b) not in seen:
                seen.add((a, b))
                heapq.heappush(heap, (low[b] - high[a], a, b))


def mine(
    items: Iterable[Item],
    *,
    level: str,
    margin: float,
    cap: int,
    accept: Callable[[Pair], bool] = lambda pair: True,
) -> Iterator[Pair]:
    """The pairs of one group, largest margin first, at most ``cap`` (0: all) accepted."""
    worst_by_text: dict[str, Item] = {}
    worst_by_answer: dict[tuple[str, str], Item] = {}
    best_by_answer: dict[tuple[str, str], Item] = {}
    for item in sorted(items, key=Item.order):
        answer = (item.prompt_key, item.completion)
        for table, key in ((worst_by_text, item.completion), (worst_by_answer, answer)):
            known = table.get(key)
            if known is None or item.score < known.score:
                table[key] = item
        known = best_by_answer.get(answer)
        if known is None or item.score > known.score:
            best_by_answer[answer] = item
    chosen = sorted(worst_by_text.values(), key=lambda it: (-it.score, it.order()))
    rejected = sorted(best_by_answer.values(), key=lambda it: (it.score, it.order()))
    kept = 0
    for i, j in by_margin([c.score for c in chosen], [r.score for r in rejected], margin):
        better, worse = chosen[i], rejected[j]
        if better.completion == worse.completion:
            continue
        # cite the same text answered to the very same request when there is one (it scores
        # at least the text's worst, so the margin still holds): a pair with one prompt
        better = worst_by_answer.get((worse.prompt_key, better.completion), better)
        pair = Pair(level, better, worse)
        if not accept(pair):
            continue
        yield pair
        kept += 1
        if kept == cap:
            return


def mine_traces(
    traces: Iterable[TraceItem],
    *,
    margin: float,
    cap: int,
    text_of: Callable[[Any, str], str | None],
    accept: Callable[[Pair], bool] = lambda pair: True,
) -> Iterator[Pair]:
    """Node-level pairs of one input's traces (credit as in the module docstring)."""
    ordered = sorted(traces, key=TraceItem.order)
    better = sorted(ordered, key=lambda t: -t.score)  # stable: ties stay in order
    worse = sorted(ordered, key=lambda t: t.score)
    seen: set[tuple[str, str, str, str]] = set()
    kept = 0
    for i, j in by_margin([t.score for t in better], [t.score for t in worse], margin):
        pair = _credited(better[i], worse[j], text_of)
        if pair is None:
            continue
        key = (pair.chosen.node, pair.rejected.prompt_key, pair.chosen.completion,
               pair.rejected.completion)  # fmt: skip
        if key in seen or not accept(pair):
            continue
        seen.add(key)
        yield pair
        kept += 1
        if kept == cap:
            return


def _credited(
    good: TraceItem, bad: TraceItem, text_of: Callable[[Any, str], str | None]
) -> Pair | None:
    """The pair at the first LLM call where ``good`` answered otherwise than ``bad``."""
    theirs = dict(bad.steps)
    for step, key in good.steps:
        other = theirs.get(step)
        if other is None or (other == key and good.source is bad.source):
            continue  # no such call there, or the very same recorded request and reply
        mine_text, their_text = text_of(good.source, key), text_of(bad.source, other)
        if mine_text is None or their_text is None:
            continue
        if mine_text != their_text:
            return Pair("node", _item(good, step[0], key, mine_text),
                        _item(bad, step[0], other, their_text))  # fmt: skip
    return None


def _item(trace: TraceItem, node: str, key: str, text: str) -> Item:
    return Item(source=trace.source, run=trace.run, candidate=trace.candidate, score=trace.score,
                completion=text, prompt_key=key, split=trace.split, example=trace.example,
                trace=trace.trace, node=node)  # fmt: skip

"""Mining preference pairs inside one group (one input, or one meta-prompt).

Every response read from a run is an :class:`Item`: who answered (run, candidate,
example, trace), the key of the request it answered, its text and the score it
earned. A :class:`Pair` is a better and a worse item whose scores differ by at
least the margin (or, at the judge level, that a judge's majority preferred).

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
- :func:`mine_judged` (pairwise judge verdicts, SPO): a :class:`Judgment` is one
  judged comparison seen on one input both candidates answered. The side that won
  a strict majority of all the comparison's votes is chosen, with its vote share
  as the pair's confidence; an unreadable vote counts for neither side (it is no
  preference), so 2-2, or 2-1 with one unreadable, gives no pair. Pairs come most
  confident first; equal answers give none, and no two repeat (prompt, chosen,
  rejected).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "Item",
    "Judgment",
    "Pair",
    "TraceItem",
    "by_margin",
    "mine",
    "mine_judged",
    "mine_traces",
]

K = TypeVar("K")


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
    """A chosen and a rejected response of one group, at one level; ``confidence`` is the
    share of a judge's votes the chosen side won (1.0 where a metric scored both)."""

    level: str
    chosen: Item
    rejected: Item
    confidence: float = 1.0

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


@dataclass(frozen=True, slots=True)
class Judgment:
    """One judged comparison on one input: both sides' answers, each ``Item.score`` the
    share of all ``votes`` that side won; ``wins`` is (incumbent's, challenger's) votes."""

    incumbent: Item
    challenger: Item
    wins: tuple[int, int]
    votes: int

    @property
    def source(self) -> Any:
        """The run it was read from."""
        return self.incumbent.source

    def verdict(self) -> tuple[Item, Item, float] | None:
        """(winner, loser, winner's vote share), or None without a strict majority."""
        for (winner, loser), won in zip(
            ((self.incumbent, self.challenger), (self.challenger, self.incumbent)),
            self.wins,
            strict=True,
        ):
            if 2 * won > self.votes:
                return winner, loser, won / self.votes
        return None


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


def _keep(table: dict[K, Item], key: K, item: Item, *, better: bool) -> None:
    """Keep at ``key`` the lowest-scoring item (``better``: the highest), the first on ties."""
    known = table.get(key)
    if known is None or (item.score > known.score if better else item.score < known.score):
        table[key] = item


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
        _keep(worst_by_text, item.completion, item, better=False)
        _keep(worst_by_answer, answer, item, better=False)
        _keep(best_by_answer, answer, item, better=True)
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
    credited = (
        _credited(better[i], worse[j], text_of)
        for i, j in by_margin([t.score for t in better], [t.score for t in worse], margin)
    )
    yield from _distinct(
        (pair for pair in credited if pair is not None),
        key=lambda p: (p.chosen.node, p.rejected.prompt_key, p.chosen.completion,
                       p.rejected.completion),
        accept=accept,
        cap=cap,
    )  # fmt: skip


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


def mine_judged(
    judgments: Iterable[Judgment],
    *,
    min_confidence: float,
    cap: int,
    accept: Callable[[Pair], bool] = lambda pair: True,
) -> Iterator[Pair]:
    """The judge-level pairs of one group, most confident first, at most ``cap`` (0: all)."""
    found = []
    for judgment in judgments:
        verdict = judgment.verdict()
        if verdict is None:
            continue  # a tie, or no majority of the votes: no preference
        chosen, rejected, confidence = verdict
        if confidence >= min_confidence and chosen.completion != rejected.completion:
            found.append(Pair("judge", chosen, rejected, confidence))
    found.sort(key=lambda p: (-p.confidence, p.chosen.order(), p.rejected.order()))
    yield from _distinct(
        found,
        key=lambda p: (p.rejected.prompt_key, p.chosen.completion, p.rejected.completion),
        accept=accept,
        cap=cap,
    )


def _distinct(
    pairs: Iterable[Pair],
    *,
    key: Callable[[Pair], tuple[str, ...]],
    accept: Callable[[Pair], bool],
    cap: int,
) -> Iterator[Pair]:
    """The pairs whose ``key`` is new and that ``accept`` passes, in order, at most ``cap``
    (0: all)."""
    seen: set[tuple[str, ...]] = set()
    kept = 0
    for pair in pairs:
        found = key(pair)
        if found in seen or not accept(pair):
            continue
        seen.add(found)
        yield pair
        kept += 1
        if kept == cap:
            return

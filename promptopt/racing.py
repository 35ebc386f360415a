"""Racing: score a step's candidates on a growing prefix of the validation rows, and drop
the ones that are plainly worse than the best so far before they cost every row.

The rows are shuffled once per run (the order is fixed, so a resumed run races
the same way). A step's candidates are scored ``min_rows`` rows at a time, in
step with each other; after each chunk each is compared with the leader on the
rows scored so far (the incumbent, the best candidate so far and scored on every
row, or a candidate of the same step, whichever has the higher mean there) on
the rows both were scored on: a one-sided exact sign test over the rows where
they differ. When that test says, at ``confidence``, that the candidate is
worse, it is dropped (worse than the leader, it cannot be the best: the leader,
or what beats the leader, will be); otherwise the next chunk runs, and a
candidate that survives every look is scored on every row, so the best is still
chosen on the whole validation split. The looks depend only on the scores, so a
resumed run drops the same candidates.

A candidate better than the leader on every row where they differ is never
dropped (its p-value is 1). The test is repeated at each look without a
correction for the repetition: a candidate equal to the incumbent is dropped now
and then, which costs nothing but a candidate that could at best have tied.
Racing is sound only for a metric scored per example, which every metric of a
task is; the engine races only the optimizers that declare ``racing = True``
(their ``observe`` copes with fewer results than proposals), and never a proposal
marked ``free`` (its answers are in the run already: the exemplar optimizer's
calibrations) nor the free step after a budget stop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptopt.optimizers.base import Candidate, Evaluated, ExampleResult
from promptopt.scoring import Scoring
from promptopt.stats import binomial_tail

if TYPE_CHECKING:
    from promptopt.optimizers.base import Proposal
    from promptopt.task.data import Example, Splits

__all__ = ["Dropped", "RaceRule", "Racing", "race_order"]


@dataclass(frozen=True, slots=True)
class Dropped:
    """A candidate racing dropped: how far it got and why."""

    candidate_id: str
    rows: int
    score: float  # its mean on the rows it was scored on
    wins: int  # rows where it beat the incumbent
    losses: int
    p_value: float
    scored: Evaluated | None = None  # the rows it was scored on (their correct answers count)

    def record(self) -> dict[str, Any]:
        return {"id": self.candidate_id, "rows": self.rows, "val": round(self.score, 6),
                "wins": self.wins, "losses": self.losses, "p": round(self.p_value, 6)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RaceRule:
    """When to look at a racing candidate, and when to drop it."""

    confidence: float = 0.95
    min_rows: int = 5

    def looks(self, n: int) -> list[int]:
        """The prefix lengths after which a candidate is tested; the last is ``n``."""
        ends = list(range(self.min_rows, n, self.min_rows))
        return [*ends, n] if n else []

    def verdict(
        self, scores: Mapping[str, float], incumbent: Mapping[str, float]
    ) -> tuple[bool, int, int, float]:
        """(drop?, wins, losses, p) of a candidate's per-example ``scores`` (by example id)
        against the incumbent's, on the rows both were scored on; p = P(at most ``wins`` of
        the differing rows) if both were equal."""
        wins = losses = 0
        for example, mine in scores.items():
            theirs = incumbent.get(example)
            if theirs is None:
                continue
            if mine > theirs:
                wins += 1
            elif mine < theirs:
                losses += 1
        p = binomial_tail(wins, wins + losses)
        return p <= 1 - self.confidence, wins, losses, p


def race_order(val: Sequence[Example], seed: int) -> list[Example]:
    """The validation rows in the run's fixed racing order."""
    order = list(val)
    random.Random(f"{seed}:racing").shuffle(order)
    return order


class Racing(Scoring):
    """:meth:`_race_step` of :class:`~promptopt.engine.Engine`: a step's candidates raced."""

    racing: RaceRule | None
    splits: Splits
    _race_order: list[Example]

    async def _race_step(
        self, proposals: Sequence[Proposal], incumbent: Mapping[str, float], *, step: int,
        origin: str, gate: asyncio.Semaphore,
    ) -> list[Evaluated | Dropped | BaseException]:  # fmt: skip
        """Score ``proposals`` chunk by chunk in the racing order, all of them each chunk;
        each outcome an :class:`Evaluated` (every row), a :class:`Dropped`, or the exception
        that stopped it (a budget stop: the rest of its rows are not scored)."""
        rule = self.racing
        if not proposals or rule is None:
            return []
        order, n = self._race_order, len(self._race_order)
        got: list[list[ExampleResult]] = [[] for _ in proposals]
        outcome: list[Evaluated | Dropped | BaseException | None] = [None] * len(proposals)
        start = 0
        for end in rule.looks(n):
            alive = [i for i, o in enumerate(outcome) if o is None]
            if not alive:
                break
            parts = await asyncio.gather(
                *(self.evaluate(proposals[i].params, order[start:end], split="val", step=step,
                                parent_id=proposals[i].parent_id, origin=origin,
                                meta=proposals[i].meta, gate=gate) for i in alive),
                return_exceptions=True,
            )  # fmt: skip
            for i, part in zip(alive, parts, strict=True):
                if isinstance(part, BaseException):
                    outcome[i] = part
                else:
                    got[i].extend(part.results)
            start = end
            if end < n:
                self._drop_behind(proposals, got, outcome, incumbent, end, step, origin)
        position = {e.id: i for i, e in enumerate(self.splits.val)}
        for i, proposal in enumerate(proposals):
            if outcome[i] is None:  # scored on every row
                rows = tuple(sorted(got[i], key=lambda r: position[r.example.id]))
                outcome[i] = self._scored(proposal, rows, step, origin)
        return [o for o in outcome if o is not None]

    def _drop_behind(
        self, proposals: Sequence[Proposal], got: list[list[ExampleResult]],
        outcome: list[Evaluated | Dropped | BaseException | None],
        incumbent: Mapping[str, float], end: int, step: int, origin: str,
    ) -> None:  # fmt: skip
        """After ``end`` rows: drop each candidate that the sign test finds worse than the
        leader (the incumbent or a candidate still racing, the higher mean on these rows)."""
        rule = self.racing
        assert rule is not None
        seen = {str(e.id) for e in self._race_order[:end]}
        rows = {-1: {k: v for k, v in incumbent.items() if k in seen}}
        rows |= {i: {str(r.example.id): r.score.value for r in got[i]}
                 for i, o in enumerate(outcome) if o is None}  # fmt: skip
        leader = max(rows, key=lambda i: _mean(rows[i].values()))  # the incumbent wins a tie
        for i in [i for i in rows if i not in (-1, leader)]:
            drop, wins, losses, p = rule.verdict(rows[i], rows[leader])
            if drop:
                self.reporter.advance(len(self._race_order) - end)
                scored = self._scored(proposals[i], tuple(got[i]), step, origin)
                outcome[i] = Dropped(scored.candidate.id, len(got[i]), scored.score, wins,
                                     losses, p, scored)  # fmt: skip

    @staticmethod
    def _scored(
        proposal: Proposal, rows: tuple[ExampleResult, ...], step: int, origin: str
    ) -> Evaluated:
        return Evaluated(Candidate(dict(proposal.params)), "val", rows,
                         parent_id=proposal.parent_id, origin=origin or "seed", step=step)  # fmt: skip


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0

"""Racing: score a step's candidates on a growing prefix of the validation rows, and drop
the ones that are plainly worse than the best so far before they cost every row.

The rows are shuffled once per run (the order is fixed, so a resumed run races
the same way). A candidate is scored ``min_rows`` rows at a time; after each
chunk it is compared with the incumbent (the best candidate so far, scored on
every row) on the rows both were scored on: a one-sided exact sign test over the
rows where they differ. When that test says, at ``confidence``, that the
candidate is worse, it is dropped; otherwise the next chunk runs, and a
candidate that survives every look is scored on every row, so the best is still
chosen on the whole validation split.

A candidate better than the incumbent on every row where they differ is never
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

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptopt.stats import binomial_tail

if TYPE_CHECKING:
    from promptopt.optimizers.base import Evaluated, ExampleResult
    from promptopt.task.data import Example

__all__ = ["Dropped", "RaceRule", "race_order"]


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
    min_rows: int = 10

    def looks(self, n: int) -> list[int]:
        """The prefix lengths after which a candidate is tested; the last is ``n``."""
        ends = list(range(self.min_rows, n, self.min_rows))
        return [*ends, n] if n else []

    def verdict(
        self, results: Sequence[ExampleResult], incumbent: Mapping[str, float]
    ) -> tuple[bool, int, int, float]:
        """(drop?, wins, losses, p) of a candidate's ``results`` against the incumbent's
        per-example scores; p = P(at most ``wins`` of the differing rows) if both were equal."""
        wins = losses = 0
        for r in results:
            theirs = incumbent.get(str(r.example.id))
            if theirs is None:
                continue
            if r.score.value > theirs:
                wins += 1
            elif r.score.value < theirs:
                losses += 1
        p = binomial_tail(wins, wins + losses)
        return p <= 1 - self.confidence, wins, losses, p


def race_order(val: Sequence[Example], seed: int) -> list[Example]:
    """The validation rows in the run's fixed racing order."""
    order = list(val)
    random.Random(f"{seed}:racing").shuffle(order)
    return order

"""Pairwise judge votes in the run store: ``RunStore.add_votes`` and ``RunStore.votes``.

One ``pairwise_votes`` row per judge call of a comparison between an incumbent
and a challenger (SPO): which side the challenger was shown on, what the judge
picked, whether the challenger won, the raw reply and the request key. A
comparison replayed by a resumed run writes nothing new: the rows are keyed by
(incumbent, challenger, vote).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptopt.optimizers.base import Verdict

__all__ = ["VoteStoreMixin"]


class VoteStoreMixin:
    """The vote methods of :class:`~promptopt.store.RunStore` (uses its ``_write``/``_rows``)."""

    def add_votes(self, verdict: Verdict, *, step: int) -> None:
        """Record every vote of ``verdict``; votes already recorded are kept as they were."""
        now = time.time()
        rows = [
            (int(step), verdict.incumbent_id, verdict.challenger_id, vote.index,
             int(vote.swapped), vote.choice, int(vote.challenger_won), vote.reply,
             vote.request_key, now)
            for vote in verdict.votes
        ]  # fmt: skip
        with self._write() as conn:  # type: ignore[attr-defined]
            conn.executemany(
                "INSERT OR IGNORE INTO pairwise_votes (step, incumbent_id, challenger_id, vote,"
                " swapped, choice, challenger_won, reply, request_key, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def votes(self) -> list[dict[str, Any]]:
        """Every recorded vote in order; ``swapped`` and ``challenger_won`` as booleans."""
        rows = self._rows("SELECT * FROM pairwise_votes ORDER BY id")  # type: ignore[attr-defined]
        return [
            dict(row)
            | {"swapped": bool(row["swapped"]), "challenger_won": bool(row["challenger_won"])}
            for row in rows
        ]

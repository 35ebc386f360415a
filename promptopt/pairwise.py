"""Pairwise selection (SPO): the :class:`PairwiseJudging` part of :class:`~promptopt.engine.Engine`.

Under a :class:`~promptopt.optimizers.base.PairwiseOptimizer` the metric is never
applied on validation: each proposal runs on the validation examples, the
optimizer's judge compares its answers with the incumbent's (every vote is
stored), its score is the share of votes it won, and a strict majority makes it
the incumbent. The seed scores :data:`SEED_SHARE`. Labels, if any, only score
the seed and the best on test.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from promptopt.optimizers.base import Evaluated, PairwiseOptimizer, Proposal, SearchState
from promptopt.scoring import Scoring

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.store import RunStore
    from promptopt.task.data import Splits

__all__ = ["SEED_SHARE", "PairwiseJudging"]

SEED_SHARE = 0.5  # the seed's validation score under pairwise selection: it challenged nobody


class PairwiseJudging(Scoring):
    """The judged evaluation of :class:`~promptopt.engine.Engine`, on :class:`Scoring`'s
    ``evaluate`` and ``_record``."""

    splits: Splits
    judge_llm: LLM
    store: RunStore

    async def _judged(
        self, state: SearchState, optimizer: PairwiseOptimizer, proposal: Proposal, *,
        step: int, rng: random.Random,
    ) -> Evaluated:  # fmt: skip
        """Run ``proposal`` on validation unscored; its score is its vote share against the
        incumbent, as the optimizer's judge gives it."""
        challenger = await self.evaluate(
            proposal.params, self.splits.val, split="val", step=step,
            parent_id=proposal.parent_id, origin=optimizer.name, meta=proposal.meta,
            scored=False, record=False,
        )  # fmt: skip
        incumbent = state.best
        assert incumbent is not None
        verdict = await optimizer.judge(
            state, incumbent=incumbent, challenger=challenger, llm=self.judge_llm, rng=rng
        )
        self.store.add_votes(verdict, step=step)
        said = (
            f"judge: won {verdict.wins} of {len(verdict.votes)} votes against "
            f"{incumbent.candidate.id}" + ("; the new incumbent" if verdict.accepted else "")
        )
        challenger = challenger.rescored(verdict.share, said)
        self._record(challenger)
        if verdict.accepted:
            state.incumbent = challenger
        if proposal.request_key:  # the optimizer reply it was read from (preference export)
            self.store.add_proposal(
                candidate_id=challenger.candidate.id, call_key=proposal.request_key, step=step
            )
        return challenger

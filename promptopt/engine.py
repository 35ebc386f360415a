"""The optimization loop: evaluate, let the optimizer propose, budget, record, checkpoint.

The engine owns everything an optimizer does not: scoring candidates on a split
(concurrently, one failing example never sinking the others), the hard budget
(a :class:`~promptopt.errors.BudgetExceededError` ends the search and keeps the
best so far), the run store (every candidate, per-example evaluation, decision
and checkpoint) and the final, one-time scoring on the held-out test split.

:class:`Engine` is put together from three parts, each in its own module:
:mod:`~promptopt.scoring` (one candidate on a split, each example in its own
trace, feedback rules), :mod:`~promptopt.pairwise` (selection by a pairwise
judge, SPO) and :mod:`~promptopt.staged_search` (the seed, then the stages of
``optimizer: [a, b]``). This module holds the steps of one stage.

Resuming is replay: the engine runs again from the start with the same seed, and
every LLM request already in the run store is answered from there, so the
optimizer re-derives the same decisions at no cost and carries on where the
crashed run stopped. Rows already recorded are not written twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from promptopt.errors import BudgetExceededError, ShareSpentError
from promptopt.optimizers.base import (
    Evaluated,
    PairwiseOptimizer,
    Proposal,
    SearchState,
    candidate_id,
    gather_all,
)
from promptopt.pairwise import SEED_SHARE, PairwiseJudging
from promptopt.progress import Reporter, SilentReporter
from promptopt.racing import Dropped, RaceRule, Racing, race_order
from promptopt.scoring import Scoring
from promptopt.staged_search import SearchOutcome, StagedSearch
from promptopt.task.feedback import FeedbackRule

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.optimizers.base import Optimizer
    from promptopt.store import RunStore
    from promptopt.task.data import Example, Splits
    from promptopt.task.metrics import Metric
    from promptopt.task.program import Program

__all__ = ["SEED_SHARE", "Engine", "SearchOutcome"]


class _CutShort(Exception):
    """A step's evaluations stopped by the budget, with the candidates scored on all of val."""

    def __init__(
        self, error: BudgetExceededError, results: list[Evaluated], partial: list[str]
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.results = results  # scored on every validation example
        self.partial = partial  # the ids of the others


class Engine(StagedSearch, PairwiseJudging, Racing, Scoring):
    def __init__(
        self,
        *,
        program: Program,
        metric: Metric | None,
        splits: Splits,
        task_llm: LLM,
        optimizer_llm: LLM,
        store: RunStore,
        judge_llm: LLM | None = None,
        concurrency: int = 8,
        seed: int = 0,
        max_steps: int = 100,
        reporter: Reporter | None = None,
        trace_name: str = "",
        sandbox: Any = None,
        feedback_rules: Sequence[FeedbackRule] = (),
        racing: RaceRule | None = None,
        shares: Sequence[float | None] = (),
    ) -> None:
        self.program = program
        self.sandbox = sandbox  # runs proposed code of trainable nodes; None: the default one
        self.feedback_rules = tuple(feedback_rules)
        self.trace_name = trace_name
        self.metric = metric
        self.splits = splits
        self.task_llm = task_llm
        self.optimizer_llm = optimizer_llm
        self.judge_llm = judge_llm or optimizer_llm
        self.store = store
        self.concurrency = concurrency
        self.seed = seed
        self.max_steps = max_steps
        self.reporter = reporter or SilentReporter()
        self.racing = racing  # None: every candidate on every validation row
        self.shares = tuple(shares)  # each stage's own share of the budget, if given
        self._race_order = race_order(splits.val, seed)
        self._recorded = {
            (row["candidate_id"], row["split"], row["example_id"]) for row in store.evaluations()
        }
        checkpoint = store.latest_checkpoint()
        self._resumed_through = checkpoint[0] if checkpoint else -1
        self._state: SearchState | None = None
        self._stage: tuple[int, str] = (0, "")  # the running stage: its index and optimizer
        self._noting: list[LLM] = []  # clients that tell _note_call their answered requests
        self._dropped: dict[int, list[Dropped]] = {}  # by step, until its decision is recorded
        self._free_scored = 0  # free proposals scored (calibrations), for the stage reports

    # -- evaluation ---------------------------------------------------------

    async def _run_stage(
        self, optimizer: Optimizer, state: SearchState, rng: random.Random, *, first: int
    ) -> tuple[str, int]:
        """The steps of one optimizer from step ``first`` on: why it stopped, and its last step."""
        step = first - 1
        for step in range(first, first + self.max_steps):
            state.step = step
            state.remaining_calls = self._remaining_calls()
            try:
                results = await self._step(optimizer, state, rng)
                if results is None:
                    return "optimizer finished", step - 1
            except BudgetExceededError as exc:  # the run's budget, or this stage's share
                stopped = f"{'share' if isinstance(exc, ShareSpentError) else 'budget'}: {exc}"
                self._decide(step, "stop", {"reason": stopped})
                await self._free_step(optimizer, state, rng, step=step + 1)
                return stopped, step
            self._after_step(state, step, results)
            self._checkpoint(state, step, stopped="")
        return "max_steps", step

    async def _step(
        self, optimizer: Optimizer, state: SearchState, rng: random.Random
    ) -> list[Evaluated] | None:
        """Ask for proposals and score each on validation (racing them where it may): those
        scored on every row; None when the optimizer is done."""
        proposals = await optimizer.propose(state, llm=self.optimizer_llm, rng=rng)
        if not proposals:
            return None
        val = state.val
        self.reporter.phase(
            f"step {state.step}: {len(proposals)} candidate(s)", len(proposals) * len(val)
        )
        if isinstance(optimizer, PairwiseOptimizer):  # one after another: each may crown a winner
            results = [
                await self._judged(state, optimizer, p, step=state.step, rng=rng) for p in proposals
            ]
        else:
            try:
                results = await self._evaluate_together(
                    proposals, val, state.step, optimizer.name,
                    against=self._incumbent_rows(optimizer, state),
                )  # fmt: skip
            except _CutShort as cut:  # a budget stop: what was scored whole still counts
                if cut.results or state.step in self._dropped:
                    self._observe(state, cut.results)
                    optimizer.observe(state, cut.results)
                    self._after_step(state, state.step, cut.results, partial=cut.partial)
                raise cut.error from None
        self._observe(state, results)
        optimizer.observe(state, results)
        return results

    async def _free_step(
        self, optimizer: Optimizer, state: SearchState, rng: random.Random, *, step: int
    ) -> None:
        """Once the budget has stopped the search: work that costs no model call still runs.

        The optimizer is asked once more with ``remaining_calls`` 0; proposals
        whose answers are all in the run (the exemplar optimizer's calibration)
        are scored; the first that needs a paid call ends it.
        """
        state.step, state.remaining_calls = step, 0
        try:
            results = await self._step(optimizer, state, rng)
        except BudgetExceededError:
            return
        if results is not None:
            self._after_step(state, step, results)

    def _after_step(
        self, state: SearchState, step: int, results: Sequence[Evaluated], *,
        partial: Sequence[str] = (),
    ) -> None:  # fmt: skip
        """Record the step's decision; ``partial``: candidates the budget cut partway."""
        best = state.best
        assert best is not None
        dropped = self._dropped.pop(step, [])
        payload: dict[str, Any] = {
            "evaluated": [
                {"id": r.candidate.id, "val": r.score, "invalid": r.invalid} for r in results
            ],
            "best": best.candidate.id,
            "best_val": best.score,
        }
        if partial:  # scored on part of val: never compared, never chosen
            payload["partial"] = list(partial)
        if dropped:  # raced out: worse than the best so far on the rows they were scored on
            payload["dropped"] = [d.record() for d in dropped]
        self._decide(step, "step", payload)
        of_step = f"best of step {max(r.score for r in results):.3f}, " if results else ""
        raced = f", {len(dropped)} dropped by racing" if dropped else ""
        self.reporter.message(
            f"step {step}: {of_step}best so far {best.score:.3f} ({best.candidate.id})"
            + raced
            + self._calls_note()
        )

    async def _evaluate_together(
        self, proposals: Sequence[Proposal], val: Sequence[Example], step: int, origin: str,
        *, against: Mapping[str, float] | None = None,
    ) -> list[Evaluated]:  # fmt: skip
        """Score the proposals of one step concurrently, all examples behind one gate.

        The gate wakes waiters in order, so one candidate's examples still go out
        together: its requests share a prefix (system + exemplars) that local
        backends reuse only when they are not interleaved with others'. Every
        evaluation finishes before the first failure is raised; a budget stop comes as
        :class:`_CutShort`, carrying the candidates that were scored on every example.
        ``against``: the incumbent's score on each validation row, to race the
        proposals against (see :mod:`promptopt.racing`); those dropped are noted
        for the step's decision and in ``SearchState.dropped``, not returned.
        """
        gate = asyncio.Semaphore(self.concurrency)
        raced = [p for p in proposals if against and not p.free]
        plain = [p for p in proposals if not (against and not p.free)]
        self._free_scored += sum(1 for p in proposals if p.free)
        together = await asyncio.gather(
            self._race_step(raced, against or {}, step=step, origin=origin, gate=gate),
            asyncio.gather(
                *(self.evaluate(p.params, val, split="val", step=step, parent_id=p.parent_id,
                                origin=origin, meta=p.meta, gate=gate) for p in plain),
                return_exceptions=True,
            ),
        )  # fmt: skip
        by_proposal = dict(zip(map(id, [*raced, *plain]), [*together[0], *together[1]],
                               strict=True))  # fmt: skip
        outcomes = [by_proposal[id(p)] for p in proposals]
        results = [o for o in outcomes if isinstance(o, Evaluated)]
        dropped = [o for o in outcomes if isinstance(o, Dropped)]
        for proposal, outcome in zip(proposals, outcomes, strict=True):
            if proposal.request_key and isinstance(outcome, Evaluated | Dropped):  # its reply
                self.store.add_proposal(
                    candidate_id=candidate_id(proposal.params), call_key=proposal.request_key,
                    step=step,
                )  # fmt: skip
        if dropped:
            self._dropped[step] = dropped
            if self._state is not None:  # seen, never chosen; their correct answers still count
                self._state.dropped.update({d.candidate_id: d.score for d in dropped})
                self._gather(self._state, [d.scored for d in dropped if d.scored is not None])
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if isinstance(failure, BudgetExceededError):
            cut = [candidate_id(p.params) for p, o in zip(proposals, outcomes, strict=True)
                   if not isinstance(o, Evaluated | Dropped)]  # fmt: skip
            raise _CutShort(failure, results, cut)
        if failure is not None:
            raise failure
        return results

    def _incumbent_rows(self, optimizer: Optimizer, state: SearchState) -> dict[str, float] | None:
        """The best candidate's score on each validation row, when this step's proposals are
        raced against it; None when they are scored on every row."""
        best = state.best
        if (self.racing is None or not getattr(optimizer, "racing", False) or best is None
                or state.remaining_calls == 0  # the free step: its answers cost nothing
                or len(state.val) <= self.racing.min_rows):  # fmt: skip
            return None
        return {str(r.example.id): r.score.value for r in best.results}

    async def score_test(self, outcome: SearchOutcome, *, llm: LLM) -> None:
        """Score the seed and the best candidate once on the held-out test split (if any,
        and if the task has a metric)."""
        test = self.splits.test
        if not test or self.metric is None:
            return
        todo = (
            [outcome.seed]
            if outcome.best.candidate.id == outcome.seed.candidate.id
            else [outcome.seed, outcome.best]
        )
        self.reporter.phase("test split (seed and best)", len(todo) * len(test))
        gate = asyncio.Semaphore(self.concurrency)  # both at once: neither depends on the other
        scored = await gather_all(
            *(self.evaluate(e.candidate.params, test, split="test", origin="test", llm=llm,
                            gate=gate) for e in todo)
        )  # fmt: skip
        outcome.seed_test = scored[0]
        outcome.best_test = scored[-1]

    def _observe(self, state: SearchState, results: Sequence[Evaluated]) -> None:
        state.history.extend(results)
        self._gather(state, results)

    def _gather(self, state: SearchState, results: Sequence[Evaluated]) -> None:
        """Add the model's correct answers in ``results`` to the exemplar pool (once per example)."""
        known = {e.id for e, _ in state.pool}
        for evaluated in results:
            for r in evaluated.results:
                if not r.failed and r.output and r.example.id not in known:
                    known.add(r.example.id)
                    state.pool.append((r.example, r.output))

    def _remaining_calls(self) -> int | None:
        # as the uninterrupted run had them here, so a resumed run's optimizer proposes the same
        budget = getattr(self.task_llm, "budget", None)
        return None if budget is None else budget.replay_remaining_calls

    def _calls_note(self) -> str:
        budget = getattr(self.task_llm, "budget", None)
        if budget is None or budget.max_calls is None:
            return ""
        return f", {budget.calls}/{budget.max_calls} calls"

    def _decide(self, step: int, kind: str, payload: Mapping[str, Any]) -> None:
        if step > self._resumed_through:
            self.store.add_decision(
                step=step, kind=kind, payload={**dict(payload), "stage": self._stage[0]}
            )

    def _checkpoint(
        self,
        state: SearchState,
        step: int,
        *,
        stopped: str,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if step <= self._resumed_through and not stopped:
            return
        best = state.best
        self.store.checkpoint(
            step=step,
            state={
                "step": step,
                "stopped": stopped,
                "candidates": len(state.history),
                "best_id": best.candidate.id if best else None,
                "best_val": best.score if best else None,
                "pool": len(state.pool),
                "stage": self._stage[0],
                "optimizer": self._stage[1],
                "at": time.time(),
                **dict(extra or {}),
            },
        )

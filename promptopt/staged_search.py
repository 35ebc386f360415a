"""A search in stages (``optimizer: [opro, exemplars]``): the :class:`StagedSearch` part of
:class:`~promptopt.engine.Engine`, and the :class:`SearchOutcome` it returns.

The seed is scored once; each stage then runs its optimizer in the same run and
budget, starting from the previous stage's best candidate with a fresh
:class:`~promptopt.optimizers.base.SearchState` (its evaluation reused as the
seed, the exemplar pool carried over). Steps and optimizer records are numbered
across the stages, and stage ``i > 0`` draws from its own ``Random`` seeded with
(seed, ``i``), so a resumed run replays the whole chain. The result is the last
stage's best.

With ``budget.max_calls`` set, each stage but the last runs under a cap on the
run's calls: its share of what the seed left (its ``share``, or the rest split
in proportion to what the optimizers estimate), plus what earlier stages left
unspent; the last stage has the rest. A stage that reaches its cap ends (a
``share`` stop), does its free work, and the next stage runs. The outcome's
``extra["stages"]`` says, for each stage, its share, what it spent, its steps
and candidates, and why it ended early when it did.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptopt.errors import BudgetExceededError, ConfigError
from promptopt.optimizers.base import Evaluated, PairwiseOptimizer, RecordFn, SearchState
from promptopt.optimizers.stages import (
    cumulative_allotment,
    merged_stats,
    planned_steps,
    share_weights,
    smallest_step,
    stages_of,
)
from promptopt.pairwise import SEED_SHARE
from promptopt.scoring import Scoring

if TYPE_CHECKING:
    from promptopt.llm.budget import Budget
    from promptopt.llm.client import LLM
    from promptopt.optimizers.base import Optimizer
    from promptopt.progress import Reporter
    from promptopt.store import RunStore
    from promptopt.task.data import Example, Splits
    from promptopt.task.feedback import FeedbackRule
    from promptopt.task.metrics import Metric

__all__ = ["SearchOutcome", "StagedSearch"]


@dataclass
class SearchOutcome:
    seed: Evaluated
    best: Evaluated
    history: list[Evaluated]
    steps: int
    stopped: str
    seed_test: Evaluated | None = None
    best_test: Evaluated | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StagedSearch(Scoring):
    """:meth:`search` of :class:`~promptopt.engine.Engine`: the seed, then the stages in order.

    It scores with :class:`Scoring` and leaves a stage's steps to the class that
    runs them (the engine), through the hooks below, each of which that class
    must define: a template method, not a search of its own.
    """

    metric: Metric | None
    splits: Splits
    task_llm: LLM
    shares: tuple[float | None, ...]  # each stage's own share, where the task gives one
    store: RunStore
    seed: int
    reporter: Reporter
    feedback_rules: tuple[FeedbackRule, ...]
    _state: SearchState | None
    _stage: tuple[int, str]

    async def search(
        self,
        optimizer: Optimizer | Sequence[Optimizer],
        seed_params: Mapping[str, Any],
        *,
        trainable: Sequence[str],
        description: str,
        choices: Sequence[str] = (),
        kinds: Mapping[str, str] | None = None,
        features: frozenset[str] = frozenset(),
    ) -> SearchOutcome:
        """Run ``optimizer``, or each optimizer of a sequence (the stages) in order, in one run.

        A later stage starts from the earlier one's best candidate (its chosen one,
        if it chooses), reusing its evaluation as its own scored seed; the model's
        correct answers gathered so far carry over, the history does not. Steps
        are numbered across stages. A budget stop lets the stopped stage and every
        later one do their free work (see :meth:`_free_step`), then ends the search.
        The result is the last stage's best.
        """
        stages = stages_of(optimizer)
        pairwise = isinstance(stages[0], PairwiseOptimizer)
        if self.metric is None and not pairwise:
            raise ConfigError(
                f"optimizer {stages[0].name!r} selects candidates by the metric, and the task "
                "has none; give a metric (or use a pairwise optimizer such as 'spo')"
            )
        val = self.splits.val
        self.reporter.phase("seed on validation", len(val))
        try:
            seed_eval = await self.evaluate(
                seed_params, val, split="val", origin="seed", scored=not pairwise, record=False
            )
            if pairwise:
                seed_eval = seed_eval.rescored(SEED_SHARE, "the seed: the first incumbent")
            self._record(seed_eval)
        except BudgetExceededError as exc:
            raise BudgetExceededError(
                f"the budget cannot cover scoring the seed on {len(val)} validation examples "
                f"({exc}); raise budget.max_calls or shrink data.split.val"
            ) from exc
        records = itertools.count()  # one numbering of optimizer records across the stages

        def state_for(index: int, start: Evaluated, pool: Sequence[Any]) -> SearchState:
            state = SearchState(
                seed=start.candidate, trainable=tuple(trainable), train=tuple(self.splits.train),
                val=tuple(val), program_description=description,
                evaluate=self._optimizer_evaluate, choices=tuple(choices),
                kinds=dict(kinds or {}), features=frozenset(features),
                record=self._recorder(stages[index].name, lambda: state.step, records),
                rules={rule.name: rule.message for rule in self.feedback_rules},
                incumbent=start if pairwise else None, pool=list(pool),
            )  # fmt: skip
            self._state, self._stage = state, (index, stages[index].name)  # probes feed its pool
            state.history.append(start)
            return state

        state = state_for(0, seed_eval, [])
        self._gather(state, [seed_eval])
        self._checkpoint(state, 0, stopped="")
        histories, stopped, step, used = [state.history], "", 0, 0
        shares = _Shares(self, stages, n_train=len(self.splits.train), n_val=len(val))
        reports = []
        for index, stage in enumerate(stages):
            rng = random.Random(self.seed if index == 0 else f"{self.seed}:{index}")
            share = None if stopped.startswith("budget") else shares.open(index)
            if index:
                start = state.best
                assert start is not None
                state = state_for(index, start, state.pool)
                histories.append(state.history[1:])  # its seed is the previous stage's
                self._decide(used + 1, "stage", {"optimizer": stage.name, "seed": start.candidate.id,
                                                 "seed_val": start.score, "share": share})  # fmt: skip
            if stopped.startswith("budget"):  # the search is over: only free work is left
                used += 1
                await self._free_step(stage, state, rng, step=used)
                reports.append(shares.report(index, state, steps=0, stopped=stopped))
                continue
            first = used + 1
            stopped, step = await self._run_stage(stage, state, rng, first=first)
            used = step + 1 if stopped.startswith(("budget", "share")) else step
            reports.append(shares.report(index, state, steps=step - first + 1, stopped=stopped))
        shares.close()
        best = state.best
        assert best is not None
        outcome = SearchOutcome(
            seed=seed_eval,
            best=best,
            history=[e for history in histories for e in history],
            steps=step,
            stopped=stopped,
        )
        stats = merged_stats(stages)
        if stats:
            outcome.extra["optimizer_stats"] = stats
        outcome.extra["stages"] = reports
        self._checkpoint(state, step, stopped=stopped, extra=outcome.extra)
        return outcome

    # -- what the engine provides ---------------------------------------------------------------

    async def _run_stage(
        self, optimizer: Optimizer, state: SearchState, rng: random.Random, *, first: int
    ) -> tuple[str, int]:
        """Run one stage's steps from step ``first``; (why it stopped, its last step)."""
        raise NotImplementedError

    async def _free_step(
        self, optimizer: Optimizer, state: SearchState, rng: random.Random, *, step: int
    ) -> None:
        """After a budget stop: the work a stage can still do without model calls."""
        raise NotImplementedError

    async def _optimizer_evaluate(
        self,
        params: Mapping[str, Any],
        examples: Sequence[Example],
        /,
        *,
        parent_id: str | None = None,
        origin: str = "probe",
        meta: Mapping[str, Any] | None = None,
    ) -> Evaluated:
        """``SearchState.evaluate``: an optimizer's probe evaluation, budgeted and recorded."""
        probe = await self.evaluate(params, examples, split="train", origin=origin,
                                    parent_id=parent_id, meta=meta)  # fmt: skip
        if self._state is not None:  # the model's correct answers join the exemplar pool
            self._gather(self._state, [probe])
        return probe

    def _gather(self, state: SearchState, results: Sequence[Evaluated]) -> None:
        """Add the model's correct answers in ``results`` to the state's exemplar pool."""
        raise NotImplementedError

    def _decide(self, step: int, kind: str, payload: Mapping[str, Any]) -> None:
        """Record one decision of the search in the store."""
        raise NotImplementedError

    def _checkpoint(self, state: SearchState, step: int, *, stopped: str,
                    extra: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """Record where the search stands, so a crashed run resumes from it."""
        raise NotImplementedError

    # -----------------------------------------------------------------------------------------

    def _recorder(
        self, optimizer: str, step: Callable[[], int], counter: Iterator[int]
    ) -> RecordFn:
        """``SearchState.record`` for ``optimizer``: records numbered by ``counter`` (shared by
        the stages of a run), each stored once."""

        def record(kind: str, payload: Mapping[str, Any]) -> None:
            self.store.add_optimizer_record(
                seq=next(counter), optimizer=optimizer, step=step(), kind=kind, payload=payload
            )

        return record


class _Shares:
    """The stages' shares of the budget left after the seed, each a cap on the run's calls.

    Figures are in the calls an uninterrupted run had spent at the same point
    (:attr:`Budget.replay_calls`), so a resumed run gives every stage the same
    share and its optimizer sizes the same steps.
    """

    def __init__(
        self, search: StagedSearch, stages: Sequence[Optimizer], *, n_train: int, n_val: int
    ) -> None:
        budget: Budget | None = getattr(search.task_llm, "budget", None)
        self.budget = budget
        self.stages, self.n_train, self.n_val = stages, n_train, n_val
        given = list(getattr(search, "shares", ()) or ()) or [None] * len(stages)
        capped = budget is not None and budget.max_calls is not None and len(stages) > 1
        self.weights = share_weights(stages, given, n_train=n_train, n_val=n_val) if capped else []
        self.start = budget.replay_calls if budget is not None else 0
        self.total = budget.replay_remaining_calls if budget is not None else None
        self._opened: dict[int, tuple[int, int | None]] = {}
        self.search = search
        self._free_before = 0

    def open(self, index: int) -> int | None:
        """Start stage ``index``: cap the run's calls at its share; the share (None: no limit)."""
        if self.budget is None:
            return None
        now = self.budget.replay_calls
        share: int | None = None
        if self.weights and index < len(self.stages) - 1:
            assert self.total is not None
            allowed = cumulative_allotment(self.weights, index, self.total)
            share = max(allowed - (now - self.start), 0)
            self.budget.cap_calls(now + share)
        else:  # the last stage (or the only one) has whatever the run has left
            self.budget.cap_calls(None)
            if self.total is not None:
                share = max(self.total - (now - self.start), 0)
        self._opened[index] = (now, share)
        return share

    def close(self) -> None:
        if self.budget is not None:
            self.budget.cap_calls(None)

    def report(self, index: int, state: SearchState, *, steps: int, stopped: str) -> dict[str, Any]:
        """What stage ``index`` was given and did, and why it ended early if it did."""
        stage = self.stages[index]
        now = self.budget.replay_calls if self.budget is not None else 0
        at, share = self._opened.get(index, (now, 0))
        spent = now - at
        planned = len(planned_steps(stage, calls=None, n_train=self.n_train, n_val=self.n_val))
        why = ""
        if stopped.startswith("share"):
            why = "its share of the budget was spent"
        elif stopped.startswith("budget"):
            why = "the budget was spent"
        elif (
            share is not None
            and steps < planned
            and share - spent < smallest_step(stage, n_train=self.n_train, n_val=self.n_val)
        ):
            why = "what was left of its share could not pay for another step"
        free_now = int(getattr(self.search, "_free_scored", 0))
        free, self._free_before = free_now - self._free_before, free_now
        return {"stage": index, "optimizer": stage.name, "share": share, "spent": spent,
                "steps": steps, "planned_steps": planned, "candidates": len(state.history) - 1,
                "free": free, "dropped": len(state.dropped), "stopped": stopped,
                "ended_early": why}  # fmt: skip

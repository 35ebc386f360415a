"""The optimization loop: evaluate, let the optimizer propose, budget, record, checkpoint.

The engine owns everything an optimizer does not: scoring candidates on a split
(concurrently, one failing example never sinking the others), the hard budget
(a :class:`~promptopt.errors.BudgetExceededError` ends the search and keeps the
best so far), the run store (every candidate, per-example evaluation, decision
and checkpoint) and the final, one-time scoring on the held-out test split.

A :class:`~promptopt.errors.ModelUnusableError` (a model that never answered is
unreachable, refused the key or does not exist) is not isolated: it ends the run.

Every example runs inside its own :class:`~promptopt.graph.Trace` whose values are
the candidate's parameters (so a workflow's ``param.value`` reads the candidate's
value and a trainable node runs the candidate's code). After scoring, the score's
feedback is attached to the trace's output node; traces with nodes are stored
with their evaluation and handed to optimizers on :class:`ExampleResult.trace`.

A task's feedback rules tag each failing example with the first rule that matches
it (its error type) and add the rule's message to its feedback.

Under a :class:`~promptopt.optimizers.base.PairwiseOptimizer` (SPO) the metric is
never applied on validation: each proposal runs on the validation examples, the
optimizer's judge compares its answers with the incumbent's (every vote is
stored), its score is the share of votes it won, and a strict majority makes it
the incumbent. Labels, if any, only score the seed and the best on test.

Resuming is replay: the engine runs again from the start with the same seed, and
every LLM request already in the run store is answered from there, so the
optimizer re-derives the same decisions at no cost and carries on where the
crashed run stopped. Rows already recorded are not written twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptopt.errors import BudgetExceededError, ConfigError, ModelUnusableError, PromptoptError
from promptopt.graph import Trace
from promptopt.graph.backward import feedback_of
from promptopt.optimizers.base import (
    Candidate,
    Evaluated,
    ExampleResult,
    PairwiseOptimizer,
    Proposal,
    RecordFn,
    SearchState,
    gather_all,
)
from promptopt.optimizers.stages import merged_stats, stages_of
from promptopt.progress import Reporter, SilentReporter
from promptopt.task.feedback import FeedbackRule, tagged
from promptopt.task.metrics import Score

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.optimizers.base import Optimizer
    from promptopt.store import RunStore
    from promptopt.task.data import Example, Splits
    from promptopt.task.metrics import Metric
    from promptopt.task.program import Program

__all__ = ["SEED_SHARE", "Engine", "SearchOutcome"]

SEED_SHARE = 0.5  # the seed's validation score under pairwise selection: it challenged nobody

# The keys of the task-model requests answered while one example's program runs (each
# example runs in its own asyncio task, so each sees its own list).
_EXAMPLE_CALLS: ContextVar[list[str] | None] = ContextVar("promptopt_example_calls", default=None)


def _note_call(event: Any) -> None:
    """LLM listener: remember the key of an answered request in the running example's list."""
    keys = _EXAMPLE_CALLS.get()
    if keys is not None and event.response is not None:
        keys.append(event.key)


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


class Engine:
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
        self._recorded = {
            (row["candidate_id"], row["split"], row["example_id"]) for row in store.evaluations()
        }
        checkpoint = store.latest_checkpoint()
        self._resumed_through = checkpoint[0] if checkpoint else -1
        self._state: SearchState | None = None
        self._stage: tuple[int, str] = (0, "")  # the running stage: its index and optimizer
        self._noting: list[LLM] = []  # clients that tell _note_call their answered requests

    # -- evaluation ---------------------------------------------------------

    async def evaluate(
        self,
        params: Mapping[str, Any],
        examples: Sequence[Example],
        *,
        split: str,
        step: int = 0,
        parent_id: str | None = None,
        origin: str = "",
        meta: Mapping[str, Any] | None = None,
        llm: LLM | None = None,
        gate: asyncio.Semaphore | None = None,
        scored: bool = True,
        record: bool = True,
    ) -> Evaluated:
        """Score one candidate on ``examples``; raises BudgetExceededError if the budget runs out.

        ``gate`` bounds the examples in flight; candidates scored together share one.
        ``scored=False`` runs the program without the metric (every score 0 until
        the caller sets it); ``record=False`` leaves recording to the caller.
        """
        if scored and self.metric is None:
            raise ConfigError(
                f"the task has no metric, so {split!r} examples cannot be scored; "
                "give a metric in the task file"
            )
        candidate = Candidate(dict(params))
        examples = [e for e in examples if not _shown_as_exemplar(e, candidate.params)]
        self.store.add_candidate(
            candidate.id,
            candidate.params,
            parent_id=parent_id,
            step=step,
            origin=origin or "seed",
            meta=dict(meta or {}),
        )
        gate = gate or asyncio.Semaphore(self.concurrency)
        budget_hit: list[BudgetExceededError] = []
        llm = llm or self.task_llm
        if not any(known is llm for known in self._noting):
            llm.add_listener(_note_call)
            self._noting.append(llm)

        async def one(example: Example) -> ExampleResult:
            async with gate:
                if budget_hit or self.store.write_error is not None:
                    return ExampleResult(example, None, Score(0.0, valid=False), "skipped")
                result = await self._score_one(candidate, example, llm, scored=scored)
            if isinstance(result, BudgetExceededError):
                budget_hit.append(result)
                return ExampleResult(example, None, Score(0.0, valid=False), "budget")
            self.reporter.advance()
            return result

        results = tuple(await asyncio.gather(*(one(e) for e in examples)))
        if self.store.write_error is not None:  # a call could not be recorded: stop here
            raise self.store.write_error
        if budget_hit:
            raise budget_hit[0]
        evaluated = Evaluated(
            candidate, split, results, parent_id=parent_id, origin=origin or "seed", step=step
        )
        if record:
            self._record(evaluated)
        return evaluated

    async def _score_one(
        self, candidate: Candidate, example: Example, llm: LLM, *, scored: bool = True
    ) -> ExampleResult | BudgetExceededError:
        run = Trace(
            name=self.trace_name,
            values=candidate.params,
            sandbox=self.sandbox,
            meta={"candidate": candidate.id, "example": str(example.id)},
        )
        keys: list[str] = []
        noting = _EXAMPLE_CALLS.set(keys)
        try:
            with run:
                output = await self.program.run(candidate.params, example, llm=llm)
        except BudgetExceededError as exc:
            return exc
        except ModelUnusableError:
            raise  # every example would fail the same way: end the run, not score it 0
        except Exception as exc:  # the user's program code: isolate, never sink the run
            error = str(exc) if isinstance(exc, PromptoptError) else f"{type(exc).__name__}: {exc}"
            failed = ExampleResult(example, None, Score(0.0, False, error), error, run)
            result = tagged(failed, self.feedback_rules)
            _attach_feedback(run, exc, f"error: {result.score.feedback}")
            return dataclasses.replace(result, trace=_kept(run))
        finally:
            _EXAMPLE_CALLS.reset(noting)
        # the one request an example's answer came from, when it came from one (the export
        # of preference pairs reads its exact messages); a workflow's calls are in its trace
        request_key = keys[0] if len(keys) == 1 else None
        if not scored or self.metric is None:
            return ExampleResult(example, output, Score(0.0), None, _kept(run), request_key)
        try:
            score = await self.metric.ascore(output, example, llm=self.judge_llm)
        except BudgetExceededError as exc:
            return exc
        except ModelUnusableError:
            raise
        except Exception as exc:
            error = f"metric failed: {type(exc).__name__}: {exc}"
            return ExampleResult(
                example,
                output,
                Score(0.0, valid=False, feedback=error),
                error,
                _kept(run),
                request_key,
            )
        result = tagged(
            ExampleResult(example, output, score, None, run, request_key), self.feedback_rules
        )
        feedback = result.score.feedback
        _attach_feedback(
            run, output, f"score {score.value:g}" + (f"; {feedback}" if feedback else "")
        )
        return dataclasses.replace(result, trace=_kept(run))

    def _record(self, evaluated: Evaluated) -> None:
        rows, traces = [], []
        for r in evaluated.results:
            key = (evaluated.candidate.id, evaluated.split, r.example.id)
            if key in self._recorded:
                continue
            self._recorded.add(key)
            if r.trace is not None:
                traces.append((r.trace, str(r.example.id)))
            rows.append(
                {
                    "candidate_id": evaluated.candidate.id,
                    "split": evaluated.split,
                    "example_id": r.example.id,
                    "inputs": dict(r.example.inputs),
                    "target": r.example.target,
                    "output": r.output,
                    "score": r.score.value,
                    "valid": r.score.valid,
                    "feedback": r.score.feedback,
                    "error": r.error,
                    "request_key": r.request_key,
                }
            )
        if rows:
            self.store.add_evaluations(rows)
        for run, example_id in traces:
            self.store.add_trace(
                run,
                candidate_id=evaluated.candidate.id,
                split=evaluated.split,
                example_id=example_id,
            )

    # -- the search ---------------------------------------------------------

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
        for index, stage in enumerate(stages):
            rng = random.Random(self.seed if index == 0 else f"{self.seed}:{index}")
            if index:
                start = state.best
                assert start is not None
                state = state_for(index, start, state.pool)
                histories.append(state.history[1:])  # its seed is the previous stage's
                self._decide(used + 1, "stage", {"optimizer": stage.name, "seed": start.candidate.id,
                                                 "seed_val": start.score})  # fmt: skip
            if stopped.startswith("budget"):  # the search is over: only free work is left
                used += 1
                await self._free_step(stage, state, rng, step=used)
                continue
            stopped, step = await self._run_stage(stage, state, rng, first=used + 1)
            used = step + 1 if stopped.startswith("budget") else step
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
        self._checkpoint(state, step, stopped=stopped, extra=outcome.extra)
        return outcome

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
                if not results:
                    return "optimizer finished", step - 1
            except BudgetExceededError as exc:
                stopped = f"budget: {exc}"
                self._decide(step, "stop", {"reason": stopped})
                await self._free_step(optimizer, state, rng, step=step + 1)
                return stopped, step
            self._after_step(state, step, results)
            self._checkpoint(state, step, stopped="")
        return "max_steps", step

    async def _step(
        self, optimizer: Optimizer, state: SearchState, rng: random.Random
    ) -> list[Evaluated]:
        """Ask for proposals and score each on validation; [] when the optimizer is done."""
        proposals = await optimizer.propose(state, llm=self.optimizer_llm, rng=rng)
        if not proposals:
            return []
        val = state.val
        self.reporter.phase(
            f"step {state.step}: {len(proposals)} candidate(s)", len(proposals) * len(val)
        )
        if isinstance(optimizer, PairwiseOptimizer):  # one after another: each may crown a winner
            results = [
                await self._judged(state, optimizer, p, step=state.step, rng=rng) for p in proposals
            ]
        else:
            results = await self._evaluate_together(proposals, val, state.step, optimizer.name)
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
        if results:
            self._after_step(state, step, results)

    def _after_step(self, state: SearchState, step: int, results: Sequence[Evaluated]) -> None:
        best = state.best
        assert best is not None
        self._decide(
            step,
            "step",
            {
                "evaluated": [
                    {"id": r.candidate.id, "val": r.score, "invalid": r.invalid} for r in results
                ],
                "best": best.candidate.id,
                "best_val": best.score,
            },
        )
        self.reporter.message(
            f"step {step}: best of step {max(r.score for r in results):.3f}, "
            f"best so far {best.score:.3f} ({best.candidate.id})" + self._calls_note()
        )

    async def _evaluate_together(
        self, proposals: Sequence[Proposal], val: Sequence[Example], step: int, origin: str
    ) -> list[Evaluated]:
        """Score the proposals of one step concurrently, all examples behind one gate.

        The gate wakes waiters in order, so one candidate's examples still go out
        together: its requests share a prefix (system + exemplars) that local
        backends reuse only when they are not interleaved with others'. Every
        evaluation finishes before the first failure (a budget stop) is raised.
        """
        gate = asyncio.Semaphore(self.concurrency)
        results = await gather_all(
            *(
                self.evaluate(p.params, val, split="val", step=step, parent_id=p.parent_id,
                              origin=origin, meta=p.meta, gate=gate)
                for p in proposals
            )
        )  # fmt: skip
        for proposal, evaluated in zip(proposals, results, strict=True):
            if proposal.request_key:  # the optimizer reply it was read from (preference export)
                self.store.add_proposal(
                    candidate_id=evaluated.candidate.id, call_key=proposal.request_key, step=step
                )
        return results

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

    async def _optimizer_evaluate(
        self, params: Mapping[str, Any], examples: Sequence[Example]
    ) -> Evaluated:
        probe = await self.evaluate(params, examples, split="train", origin="probe")
        if self._state is not None:  # the model's correct answers join the exemplar pool
            self._gather(self._state, [probe])
        return probe

    def _observe(self, state: SearchState, results: Sequence[Evaluated]) -> None:
        state.history.extend(results)
        self._gather(state, results)

    def _gather(self, state: SearchState, results: Sequence[Evaluated]) -> None:
        """Add the model's correct answers in ``results`` to the exemplar pool (once per example)."""
        known = {e.id for e, _ in state.pool}
        for evaluated in results:
            for r in evaluated.results:
                if (
                    r.score.valid
                    and r.score.value >= 1.0
                    and r.output
                    and r.example.id not in known
                ):
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


def _kept(run: Trace) -> Trace | None:
    """The trace, if the program recorded anything in it (a plain prompt program may not)."""
    return run if run.calls() else None


def _attach_feedback(run: Trace, output: Any, text: str) -> None:
    """Attach ``text`` to the node that produced ``output`` (or raised it), else the last node."""
    if not run.calls():
        return
    index = run.find(output) if output is not None else None
    if index is None:
        ops = [n.index for n in run.nodes if n.kind == "op"]
        if not ops:
            return
        index = ops[-1]
    run.feedback.append(feedback_of(text, output=index))


def _shown_as_exemplar(example: Example, params: Mapping[str, Any]) -> bool:
    """True when the candidate shows this very example as an exemplar (scoring it would leak)."""
    inputs = dict(example.inputs)
    for value in params.values():
        if isinstance(value, list) and any(
            isinstance(e, Mapping) and isinstance(e.get("inputs"), Mapping)
            and dict(e["inputs"]) == inputs
            for e in value
        ):  # fmt: skip
            return True
    return False

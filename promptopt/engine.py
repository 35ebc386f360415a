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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptopt.errors import BudgetExceededError, ModelUnusableError, PromptoptError
from promptopt.graph import Trace
from promptopt.graph.backward import feedback_of
from promptopt.optimizers.base import Candidate, Evaluated, ExampleResult, SearchState
from promptopt.progress import Reporter, SilentReporter
from promptopt.task.metrics import Score

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.optimizers.base import Optimizer
    from promptopt.store import RunStore
    from promptopt.task.data import Example, Splits
    from promptopt.task.metrics import Metric
    from promptopt.task.program import Program

__all__ = ["Engine", "SearchOutcome"]


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
        metric: Metric,
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
    ) -> None:
        self.program = program
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
    ) -> Evaluated:
        """Score one candidate on ``examples``; raises BudgetExceededError if the budget runs out."""
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
        gate = asyncio.Semaphore(self.concurrency)
        budget_hit: list[BudgetExceededError] = []

        async def one(example: Example) -> ExampleResult:
            async with gate:
                if budget_hit:
                    return ExampleResult(example, None, Score(0.0, valid=False), "skipped")
                result = await self._score_one(candidate, example, llm or self.task_llm)
            if isinstance(result, BudgetExceededError):
                budget_hit.append(result)
                return ExampleResult(example, None, Score(0.0, valid=False), "budget")
            self.reporter.advance()
            return result

        results = tuple(await asyncio.gather(*(one(e) for e in examples)))
        if budget_hit:
            raise budget_hit[0]
        evaluated = Evaluated(
            candidate, split, results, parent_id=parent_id, origin=origin or "seed", step=step
        )
        self._record(evaluated)
        return evaluated

    async def _score_one(
        self, candidate: Candidate, example: Example, llm: LLM
    ) -> ExampleResult | BudgetExceededError:
        run = Trace(
            name=self.trace_name,
            values=candidate.params,
            meta={"candidate": candidate.id, "example": str(example.id)},
        )
        try:
            with run:
                output = await self.program.run(candidate.params, example, llm=llm)
        except BudgetExceededError as exc:
            return exc
        except ModelUnusableError:
            raise  # every example would fail the same way: end the run, not score it 0
        except Exception as exc:  # the user's program code: isolate, never sink the run
            error = str(exc) if isinstance(exc, PromptoptError) else f"{type(exc).__name__}: {exc}"
            _attach_feedback(run, exc, f"error: {error}")
            return ExampleResult(
                example, None, Score(0.0, valid=False, feedback=error), error, _kept(run)
            )
        try:
            score = await self.metric.ascore(output, example, llm=self.judge_llm)
        except BudgetExceededError as exc:
            return exc
        except ModelUnusableError:
            raise
        except Exception as exc:
            error = f"metric failed: {type(exc).__name__}: {exc}"
            return ExampleResult(
                example, output, Score(0.0, valid=False, feedback=error), error, _kept(run)
            )
        verdict = f"score {score.value:g}" + (f"; {score.feedback}" if score.feedback else "")
        _attach_feedback(run, output, verdict)
        return ExampleResult(example, output, score, None, _kept(run))

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
        optimizer: Optimizer,
        seed_params: Mapping[str, Any],
        *,
        trainable: Sequence[str],
        description: str,
        choices: Sequence[str] = (),
        kinds: Mapping[str, str] | None = None,
    ) -> SearchOutcome:
        rng = random.Random(self.seed)
        val = self.splits.val
        self.reporter.phase("seed on validation", len(val))
        try:
            seed_eval = await self.evaluate(seed_params, val, split="val", origin="seed")
        except BudgetExceededError as exc:
            raise BudgetExceededError(
                f"the budget cannot cover scoring the seed on {len(val)} validation examples "
                f"({exc}); raise budget.max_calls or shrink data.split.val"
            ) from exc
        state = SearchState(
            seed=seed_eval.candidate,
            trainable=tuple(trainable),
            train=tuple(self.splits.train),
            val=tuple(val),
            program_description=description,
            evaluate=self._optimizer_evaluate,
            choices=tuple(choices),
            kinds=dict(kinds or {}),
        )
        self._observe(state, [seed_eval])
        self._checkpoint(state, 0, stopped="")
        stopped, step = "max_steps", 0
        for step in range(1, self.max_steps + 1):
            state.step = step
            state.remaining_calls = self._remaining_calls()
            try:
                proposals = await optimizer.propose(state, llm=self.optimizer_llm, rng=rng)
                if not proposals:
                    stopped, step = "optimizer finished", step - 1
                    break
                self.reporter.phase(
                    f"step {step}: {len(proposals)} candidate(s)", len(proposals) * len(val)
                )
                # one candidate after another, each with its examples in flight together:
                # a candidate's requests share a prefix (system + exemplars), which local
                # backends reuse only when the requests are not interleaved with others
                results = [
                    await self.evaluate(
                        p.params,
                        val,
                        split="val",
                        step=step,
                        parent_id=p.parent_id,
                        origin=optimizer.name,
                        meta=p.meta,
                    )
                    for p in proposals
                ]
            except BudgetExceededError as exc:
                stopped = f"budget: {exc}"
                self._decide(step, "stop", {"reason": stopped})
                break
            self._observe(state, results)
            optimizer.observe(state, results)
            best = state.best
            assert best is not None
            self._decide(
                step,
                "step",
                {
                    "evaluated": [
                        {"id": r.candidate.id, "val": r.score, "invalid": r.invalid}
                        for r in results
                    ],
                    "best": best.candidate.id,
                    "best_val": best.score,
                },
            )
            self.reporter.message(
                f"step {step}: best of step {max(r.score for r in results):.3f}, "
                f"best so far {best.score:.3f} ({best.candidate.id})" + self._calls_note()
            )
            self._checkpoint(state, step, stopped="")
        best = state.best
        assert best is not None
        outcome = SearchOutcome(
            seed=seed_eval, best=best, history=state.history, steps=step, stopped=stopped
        )
        stats = getattr(optimizer, "stats", None)  # how the optimizer model did, if it counts
        if isinstance(stats, Mapping):
            outcome.extra["optimizer_stats"] = dict(stats)
        self._checkpoint(state, step, stopped=stopped, extra=outcome.extra)
        return outcome

    async def score_test(self, outcome: SearchOutcome, *, llm: LLM) -> None:
        """Score the seed and the best candidate once on the held-out test split."""
        test = self.splits.test
        if not test:
            return
        todo = (
            [outcome.seed]
            if outcome.best.candidate.id == outcome.seed.candidate.id
            else [outcome.seed, outcome.best]
        )
        self.reporter.phase("test split (seed and best)", len(todo) * len(test))
        scored = [
            await self.evaluate(e.candidate.params, test, split="test", origin="test", llm=llm)
            for e in todo
        ]
        outcome.seed_test = scored[0]
        outcome.best_test = scored[-1]

    async def _optimizer_evaluate(
        self, params: Mapping[str, Any], examples: Sequence[Example]
    ) -> Evaluated:
        return await self.evaluate(params, examples, split="train", origin="probe")

    def _observe(self, state: SearchState, results: Sequence[Evaluated]) -> None:
        known = {e.id for e, _ in state.pool}
        for evaluated in results:
            state.history.append(evaluated)
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
        budget = getattr(self.task_llm, "budget", None)
        return None if budget is None else budget.remaining_calls

    def _calls_note(self) -> str:
        budget = getattr(self.task_llm, "budget", None)
        if budget is None or budget.max_calls is None:
            return ""
        return f", {budget.calls}/{budget.max_calls} calls"

    def _decide(self, step: int, kind: str, payload: Mapping[str, Any]) -> None:
        if step > self._resumed_through:
            self.store.add_decision(step=step, kind=kind, payload=dict(payload))

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

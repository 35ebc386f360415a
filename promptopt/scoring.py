"""Scoring one candidate on a split: the :class:`Scoring` part of :class:`~promptopt.engine.Engine`.

Every example runs inside its own :class:`~promptopt.graph.Trace` whose values are
the candidate's parameters (so a workflow's ``param.value`` reads the candidate's
value and a trainable node runs the candidate's code), concurrently behind one
gate; one failing example never sinks the others. After scoring, the score's
feedback is attached to the trace's output node; traces with nodes are stored
with their evaluation and handed to optimizers on :class:`ExampleResult.trace`.

A task's feedback rules tag each failing example with the first rule that matches
it (its error type) and add the rule's message to its feedback.

A :class:`~promptopt.errors.ModelUnusableError` (a model that never answered is
unreachable, refused the key or does not exist) is not isolated: it ends the run.
Rows already recorded (a resumed run's replay) are not written twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from promptopt.errors import BudgetExceededError, ConfigError, ModelUnusableError, PromptoptError
from promptopt.graph import Trace
from promptopt.graph.backward import feedback_of
from promptopt.optimizers.base import Candidate, Evaluated, ExampleResult
from promptopt.task.feedback import FeedbackRule, tagged
from promptopt.task.metrics import Score

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.progress import Reporter
    from promptopt.store import RunStore
    from promptopt.task.data import Example
    from promptopt.task.metrics import Metric
    from promptopt.task.program import Program

__all__ = ["Scoring"]

# The keys of the task-model requests answered while one example's program runs (each
# example runs in its own asyncio task, so each sees its own list).
_EXAMPLE_CALLS: ContextVar[list[str] | None] = ContextVar("promptopt_example_calls", default=None)


def _note_call(event: Any) -> None:
    """LLM listener: remember the key of an answered request in the running example's list."""
    keys = _EXAMPLE_CALLS.get()
    if keys is not None and event.response is not None:
        keys.append(event.key)


class Scoring:
    """The evaluation methods of :class:`~promptopt.engine.Engine` (which sets these fields)."""

    program: Program
    metric: Metric | None
    task_llm: LLM
    judge_llm: LLM
    store: RunStore
    sandbox: Any
    feedback_rules: tuple[FeedbackRule, ...]
    trace_name: str
    concurrency: int
    reporter: Reporter
    _recorded: set[tuple[str, str, str]]
    _noting: list[LLM]

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

"""One call from Python: ``optimize(task)``, ``evaluate(task)`` and ``plan(task)``.

These build the run from a task file (models, budget, cache, store, program,
metric, data, optimizer), hand it to the :class:`~promptopt.engine.Engine` and
return plain result objects. The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptopt import aio
from promptopt.engine import SearchOutcome
from promptopt.errors import ConfigError, StoreError, TaskFileError
from promptopt.label_lists import label_notes, program_texts
from promptopt.optimizers.base import Candidate
from promptopt.planning import Plan, check_shares, estimate_plan
from promptopt.preflight import check_together, named_models, preflight
from promptopt.progress import Reporter, SilentReporter
from promptopt.sandbox import Sandbox
from promptopt.session import RunParts, build_parts, make_sandbox
from promptopt.stats import Comparison, compare
from promptopt.store import RunLock, RunStore, resolve_run
from promptopt.task.loader import load_task
from promptopt.task.spec import TaskSpec

__all__ = ["OptimizeResult", "Plan", "optimize", "aoptimize", "plan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizeResult:
    """What one optimization run produced.

    ``scores`` maps ``seed_val``, ``best_val``, ``seed_test`` and ``best_test`` to
    accuracies (test entries are None when the task has no test split);
    ``usage`` holds the optimization phase's calls, cache hits, tokens and cost;
    ``optimizer_stats`` what the optimizer counted about its model's replies
    (OptoPrime: replies, unparseable, repaired, ...), empty if it counts nothing;
    ``optimizer_usage`` the optimizer model's share of ``usage`` (calls, prompt and
    completion tokens: what a slow local optimizer model spends its time on);
    ``judge_usage`` the judge model's share (``spo``'s votes, a judge metric);
    ``task_usage`` the task model's (each usage also holds ``busy_s``, the seconds
    that model had a call in flight: tokens over it is its speed in this run).
    ``comparison`` (:class:`~promptopt.stats.Comparison`) the best against the seed
    on test, paired by example (wins, losses, exact McNemar p-value, a bootstrap 95%
    interval of the gain), the majority class of validation and test for labelled
    tasks, and the best's validation-to-test drop; None without test scores. When
    the best is the seed, both sides are the seed's one test evaluation: no wins, no
    losses, p = 1. ``stages`` says for each stage of the search (one, unless the
    optimizer is a list) its ``share`` of the budget's calls (None: no limit),
    the calls it ``spent``, its ``steps`` and ``planned_steps`` (at its defaults),
    its ``candidates`` scored whole (``free`` of them re-read answers already in the
    run: calibrations) and ``dropped`` by racing, why it ``stopped``,
    and ``ended_early``: why it stopped short of its plan, in words ("" if it did not).
    """

    best: Candidate
    seed: Candidate
    scores: Mapping[str, float | None]
    invalid: Mapping[str, int | None]
    usage: Mapping[str, Any]
    test_usage: Mapping[str, Any]
    run_dir: Path
    run_id: str
    best_prompt_path: Path
    steps: int
    stopped: str
    wall_s: float
    optimizer_stats: Mapping[str, Any] = field(default_factory=dict)
    optimizer_usage: Mapping[str, Any] = field(default_factory=dict)
    judge_usage: Mapping[str, Any] = field(default_factory=dict)
    task_usage: Mapping[str, Any] = field(default_factory=dict)
    comparison: Comparison | None = None
    stages: tuple[Mapping[str, Any], ...] = ()


def optimize(
    task: str | Path | TaskSpec,
    *,
    resume: str | Path | None = None,
    output: str | Path | None = None,
    reporter: Reporter | None = None,
    backends: Mapping[str, Any] | None = None,
    sandbox: Sandbox | None = None,
    probe: bool = True,
) -> OptimizeResult:
    """Optimize the task's program and return the best candidate, its scores and the run folder.

    Before anything is spent, every model's key variable must be set and (unless
    ``probe`` is False) every endpoint must answer one free request. ``sandbox``
    replaces the one the task's ``sandbox`` block describes, for example
    ``Sandbox(isolation="none")`` to opt out of isolation from Python.
    """
    return aio.run(
        aoptimize(
            task,
            resume=resume,
            output=output,
            reporter=reporter,
            backends=backends,
            sandbox=sandbox,
            probe=probe,
        )
    )


async def aoptimize(
    task: str | Path | TaskSpec,
    *,
    resume: str | Path | None = None,
    output: str | Path | None = None,
    reporter: Reporter | None = None,
    backends: Mapping[str, Any] | None = None,
    sandbox: Sandbox | None = None,
    probe: bool = True,
) -> OptimizeResult:
    spec = load_task(task) if isinstance(task, str | Path) else task
    await preflight(spec, probe=probe, skip=backends or (), task_file=_named_file(task))
    reporter = reporter or SilentReporter()
    out_dir = Path(output) if output is not None else Path(spec.output)
    started = time.perf_counter()
    sandbox = sandbox or make_sandbox(spec)  # refuses before a run folder exists
    check_shares(spec)  # a stage's share that cannot pay for one step: before anything
    store, lock = _open_locked(spec, resume=resume, out_dir=out_dir)
    try:
        try:
            parts = build_parts(spec, store=store, backends=backends, sandbox=sandbox)
        except BaseException as exc:
            _set_failed(store, exc)
            raise
        if resume is not None:
            reporter.message(f"resuming run {store.run_id} from {store.root}" + _spent(parts))
        else:
            reporter.message(f"run {store.run_id} in {store.root}")
        try:
            outcome = await _run(parts, store, reporter)
            store.set_status("finished", detail=outcome.stopped)
        except BaseException as exc:
            _set_failed(store, exc)
            raise
        finally:
            await parts.aclose()
            reporter.close()
        return _result(parts, store, outcome, time.perf_counter() - started)
    finally:
        store.close()
        lock.release()


def _open_locked(
    spec: TaskSpec, *, resume: str | Path | None, out_dir: Path
) -> tuple[RunStore, RunLock]:
    """The run's store, new or resumed, with this process holding the run's lock."""
    if resume is not None:
        root = resolve_run(resume, output_dir=out_dir)
        lock = RunLock.acquire(root)  # before opening: the holder may be writing the store
        store = None
        try:
            store = RunStore.open(root, output_dir=out_dir)
            _check_same_task(store, spec)
        except BaseException:
            if store is not None:
                store.close()
            lock.release()
            raise
        return store, lock
    store = RunStore.create(
        out_dir,
        task=spec.model_dump(mode="json"),
        task_path=str(getattr(spec, "path", "") or ""),
    )
    try:
        return store, RunLock.acquire(store.root)
    except BaseException:
        store.close()
        raise


def _spent(parts: RunParts) -> str:
    budget = parts.budget
    if not budget.carried_calls:
        return ""
    limit = "" if budget.max_calls is None else f"/{budget.max_calls}"
    return f" ({budget.carried_calls}{limit} calls of its budget already spent)"


def _set_failed(store: RunStore, exc: BaseException) -> None:
    """Record why the run stopped, if the store can still be written (a full disk may refuse)."""
    status = (
        "interrupted" if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError) else "failed"
    )
    try:
        store.set_status(status, detail=f"{type(exc).__name__}: {exc}")
    except StoreError:
        logger.debug("could not record status %r in %r", status, store, exc_info=True)


async def _run(parts: RunParts, store: RunStore, reporter: Reporter) -> SearchOutcome:
    engine = parts.engine(store, reporter=reporter)
    outcome = await engine.search(
        parts.optimizers,
        parts.program.seed_params(),
        trainable=parts.program.trainable,
        description=parts.description,
        choices=getattr(parts.program, "choices", ()),
        kinds=parts.program.kinds,
        features=parts.program.features,
    )
    await engine.score_test(outcome, llm=parts.test_llm)
    return outcome


def _result(
    parts: RunParts, store: RunStore, outcome: SearchOutcome, wall: float
) -> OptimizeResult:
    best = outcome.best.candidate
    prompt_path = store.root / "best_prompt.txt"
    try:
        prompt_path.write_text(parts.program.describe(best.params), encoding="utf-8")
        (store.root / "best_candidate.json").write_text(
            json.dumps({"id": best.id, "params": best.params}, indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    except OSError as exc:
        raise StoreError(
            f"run {store.run_id!r} finished (its store holds the result) but its best "
            f"candidate could not be written to {str(store.root)!r}: {exc.strerror or exc}"
        ) from exc
    seed_test, best_test = outcome.seed_test, outcome.best_test
    return OptimizeResult(
        best=best,
        seed=outcome.seed.candidate,
        scores={
            "seed_val": outcome.seed.score,
            "best_val": outcome.best.score,
            "seed_test": seed_test.score if seed_test else None,
            "best_test": best_test.score if best_test else None,
        },
        invalid={
            "seed_test": seed_test.invalid if seed_test else None,
            "best_test": best_test.invalid if best_test else None,
        },
        usage=parts.optimization_usage(),
        test_usage=parts.test_llm.stats.snapshot(),
        run_dir=store.root,
        run_id=store.run_id,
        best_prompt_path=prompt_path,
        steps=outcome.steps,
        stopped=outcome.stopped,
        wall_s=wall,
        optimizer_stats=dict(outcome.extra.get("optimizer_stats") or {}),
        optimizer_usage=parts.optimizer_llm.stats.snapshot(),
        judge_usage=parts.judge_llm.stats.snapshot(),
        task_usage=parts.task_llm.stats.snapshot(),
        comparison=_comparison(parts, outcome, store.meta().get("task")),
        stages=tuple(outcome.extra.get("stages") or ()),
    )


def _comparison(parts: RunParts, outcome: SearchOutcome, task: Any) -> Comparison | None:
    """The best against the seed on test (None when the run scored no test split); ``task``
    as the store holds it, for the program's fixed texts."""
    seed_test, best_test = outcome.seed_test, outcome.best_test
    if seed_test is None or best_test is None:
        return None
    if outcome.best.candidate.id == outcome.seed.candidate.id:
        best_test = seed_test
    choices = getattr(parts.program, "choices", ())
    task = json.loads(task) if isinstance(task, str) else task
    program = task.get("program") if isinstance(task, dict) else None
    return compare(
        {r.example.id: r.score.value for r in seed_test.results},
        {r.example.id: r.score.value for r in best_test.results},
        val_targets=[e.target for e in parts.splits.val],
        test_targets=[e.target for e in parts.splits.test],
        best_val=outcome.best.score,
        choices=choices,
        label_notes=label_notes(program_texts(program, outcome.best.candidate.params), choices),
    )


def _named_file(task: Any) -> str | Path | None:
    """The task file as the caller named it (errors show it so), if a file was named."""
    return task if isinstance(task, str | Path) else None


def _check_same_task(store: RunStore, spec: TaskSpec) -> None:
    recorded = store.meta().get("task")
    if isinstance(recorded, str):
        recorded = json.loads(recorded)
    if recorded is not None and recorded != spec.model_dump(mode="json"):
        raise StoreError(
            f"run {store.run_id!r} was made from a different task file; "
            "resume it with the task file it started with"
        )


# -- dry run ------------------------------------------------------------------


def plan(task: str | Path | TaskSpec) -> Plan:
    spec = load_task(task) if isinstance(task, str | Path) else task
    try:
        check_together(named_models(spec))  # engines that cannot share one GPU
        return estimate_plan(spec)
    except TaskFileError:
        raise
    except ConfigError as exc:  # found while building the program (its entry, its template)
        if not isinstance(task, str | Path):
            raise
        raise TaskFileError(str(task), "", str(exc)) from exc

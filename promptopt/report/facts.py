"""What a report says about a run, read once from its store: candidates, scores, calls, costs.

:class:`RunFacts` is plain data, so the HTML page (:mod:`promptopt.report.html`)
and the terminal view (:mod:`promptopt.report.show`) draw the same numbers.
A candidate's validation score is the mean of its validation rows; the point
at which it was known is its last validation row, and the calls, tokens and
dollars spent by then are the paid (not replayed) calls started before it.
A candidate is ``partial`` when it lacks a row of a validation example that
another candidate was scored on and that it does not show as an exemplar (a
budget cut it short, or racing dropped it early): its mean is over fewer
examples, so reports never count it as the best so far. ``comparison`` is the
best against the seed on test (:func:`promptopt.stats.compare`, the numbers
the run's summary printed), None without test rows of both.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from promptopt.label_lists import label_notes, program_texts
from promptopt.stats import Comparison, compare
from promptopt.store import RunStore

__all__ = ["CandidateFacts", "ExampleDiff", "ModelCost", "RunFacts"]


@dataclass(frozen=True, slots=True)
class CandidateFacts:
    id: str
    parent_id: str | None
    step: int
    origin: str
    params: dict[str, Any]
    val: float | None
    test: float | None
    val_rows: int
    calls_by_then: int  # paid calls started before its validation score was complete
    tokens_by_then: int
    usd_by_then: float
    partial: bool = False  # scored on part of validation: its mean is not comparable


@dataclass(frozen=True, slots=True)
class ExampleDiff:
    """One test example on which the seed and the best candidate scored differently."""

    example_id: str
    inputs: dict[str, Any]
    target: Any
    seed_output: str | None
    best_output: str | None
    seed_score: float
    best_score: float

    @property
    def won(self) -> bool:
        return self.best_score > self.seed_score


@dataclass(frozen=True, slots=True)
class ModelCost:
    model: str
    tag: str
    paid: int
    replayed: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    usd: float
    seconds: float


@dataclass(frozen=True, slots=True)
class RunFacts:
    run_id: str
    task_name: str
    status: str
    created_at: str
    optimizer: str
    models: dict[str, Any]
    candidates: list[CandidateFacts]
    seed_id: str | None
    best_id: str | None
    examples: list[ExampleDiff] = field(default_factory=list)
    costs: list[ModelCost] = field(default_factory=list)
    test_rows: int = 0
    comparison: Comparison | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)  # as OptimizeResult.stages

    @property
    def by_id(self) -> dict[str, CandidateFacts]:
        return {c.id: c for c in self.candidates}

    @property
    def seed(self) -> CandidateFacts | None:
        return self.by_id.get(self.seed_id or "")

    @property
    def best(self) -> CandidateFacts | None:
        return self.by_id.get(self.best_id or "")

    @classmethod
    def load(cls, store: RunStore) -> RunFacts:
        meta = store.meta()
        task = meta.get("task") or {}
        if isinstance(task, str):
            task = json.loads(task)
        calls = store.llm_calls()
        paid = [c for c in calls if not c["cached"] and c["error"] is None]
        paid.sort(key=lambda c: c["started_at"])
        starts = [c["started_at"] for c in paid]
        tokens, usd = [0], [0.0]
        for c in paid:
            tokens.append(tokens[-1] + c["prompt_tokens"] + c["completion_tokens"])
            usd.append(usd[-1] + c["cost_usd"])
        rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in store.evaluations():
            rows[(row["candidate_id"], row["split"])].append(row)
        val_inputs = {r["example_id"]: r["inputs"] for (_, split), rs in rows.items()
                      if split == "val" for r in rs}  # fmt: skip
        candidates = []
        for c in store.candidates():
            val = rows.get((c["id"], "val"), [])
            test = rows.get((c["id"], "test"), [])
            known_at = max((r["created_at"] for r in val), default=c["created_at"])
            spent = bisect.bisect_right(starts, known_at)
            candidates.append(
                CandidateFacts(
                    id=c["id"], parent_id=c["parent_id"], step=c["step"], origin=c["origin"],
                    params=c["params"], val=_mean(val), test=_mean(test), val_rows=len(val),
                    calls_by_then=spent, tokens_by_then=tokens[spent], usd_by_then=usd[spent],
                    partial=_partial(val, val_inputs, c["params"]),
                )
            )  # fmt: skip
        checkpoint = store.latest_checkpoint()
        seed_id = next((c.id for c in candidates if c.origin == "seed"), None)
        best_id = (checkpoint[1].get("best_id") if checkpoint else None) or seed_id
        return cls(
            run_id=store.run_id,
            task_name=str(meta.get("task_name") or task.get("name") or ""),
            status=str(meta.get("status", "")),
            created_at=str(meta.get("created_at", "")),
            optimizer=_optimizer_names(task.get("optimizer")),
            models=dict(task.get("models") or {}),
            candidates=candidates,
            seed_id=seed_id,
            best_id=best_id,
            examples=_example_diffs(rows, seed_id, best_id),
            costs=_costs(calls),
            test_rows=len(rows.get((best_id or "", "test"), [])),
            comparison=_comparison(
                rows,
                seed_id,
                best_id,
                task,
                next((c.params for c in candidates if c.id == best_id), {}),
            ),
            stages=list((checkpoint[1].get("stages") if checkpoint else None) or []),
        )


def _mean(rows: list[dict[str, Any]]) -> float | None:
    scores = [r["score"] for r in rows if r["score"] is not None]
    return sum(scores) / len(scores) if scores else None


def _partial(val: list[dict[str, Any]], val_inputs: dict[str, Any], params: dict[str, Any]) -> bool:
    """Scored on validation, but not on every example some candidate was scored on, less
    the ones it shows as exemplars (which the engine leaves out of its score)."""
    if not val:
        return False
    shown = [e["inputs"] for value in params.values() if isinstance(value, list)
             for e in value if isinstance(e, dict) and isinstance(e.get("inputs"), dict)]  # fmt: skip
    missing = val_inputs.keys() - {r["example_id"] for r in val}
    return any(val_inputs[example_id] not in shown for example_id in missing)


def _comparison(
    rows: dict[tuple[str, str], list[dict[str, Any]]],
    seed_id: str | None,
    best_id: str | None,
    task: dict[str, Any],
    best_params: dict[str, Any],
) -> Comparison | None:
    """The best against the seed on test, from their stored rows (None without both)."""
    seed = {r["example_id"]: r for r in rows.get((seed_id or "", "test"), [])}
    best = {r["example_id"]: r for r in rows.get((best_id or "", "test"), [])}
    if not seed or not best:
        return None
    val = {r["example_id"]: r["target"] for (_, split), rs in rows.items() if split == "val"
           for r in rs}  # fmt: skip
    program = task.get("program")
    choices = tuple(program.get("choices") or ()) if isinstance(program, dict) else ()
    return compare(
        {k: r["score"] for k, r in seed.items() if r["score"] is not None},
        {k: r["score"] for k, r in best.items() if r["score"] is not None},
        val_targets=list(val.values()),  # every example some candidate was scored on
        test_targets=[r["target"] for r in {**seed, **best}.values()],
        best_val=_mean(rows.get((best_id or "", "val"), [])),
        choices=choices,
        label_notes=label_notes(program_texts(program, best_params), choices),
    )


def _example_diffs(
    rows: dict[tuple[str, str], list[dict[str, Any]]], seed_id: str | None, best_id: str | None
) -> list[ExampleDiff]:
    seed = {r["example_id"]: r for r in rows.get((seed_id or "", "test"), [])}
    best = {r["example_id"]: r for r in rows.get((best_id or "", "test"), [])}
    diffs = []
    for example_id in sorted(seed.keys() & best.keys(), key=_natural):
        s, b = seed[example_id], best[example_id]
        if (s["score"] or 0.0) != (b["score"] or 0.0):
            diffs.append(
                ExampleDiff(
                    example_id=example_id, inputs=b["inputs"], target=b["target"],
                    seed_output=s["output"], best_output=b["output"],
                    seed_score=s["score"] or 0.0, best_score=b["score"] or 0.0,
                )
            )  # fmt: skip
    return diffs


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 62, text)


def _costs(calls: list[dict[str, Any]]) -> list[ModelCost]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in calls:
        groups[(f"{c['provider']}:{c['model']}", c["tag"] or "task")].append(c)
    costs = []
    for (model, tag), group in sorted(groups.items()):
        paid = [c for c in group if not c["cached"]]
        costs.append(
            ModelCost(
                model=model, tag=tag, paid=len(paid), replayed=len(group) - len(paid),
                failed=sum(1 for c in paid if c["error"] is not None),
                prompt_tokens=sum(c["prompt_tokens"] for c in paid),
                completion_tokens=sum(c["completion_tokens"] for c in paid),
                usd=sum(c["cost_usd"] for c in paid), seconds=sum(c["duration_s"] for c in paid),
            )
        )  # fmt: skip
    return costs


def _optimizer_names(recorded: Any) -> str:
    """The task's optimizer as recorded (one mapping, or a list of stages): ``opro -> exemplars``."""
    stages = recorded if isinstance(recorded, list) else [recorded or {}]
    return " -> ".join(str(s.get("name", "")) for s in stages if isinstance(s, dict))

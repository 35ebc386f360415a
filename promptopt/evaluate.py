"""Score one program on one split: the seed of a task, or the best candidate of a finished run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptopt.errors import ConfigError, StoreError
from promptopt.preflight import preflight
from promptopt.session import build_parts
from promptopt.store import RunStore
from promptopt.task.loader import load_task
from promptopt.task.spec import TaskSpec

__all__ = ["EvalReport", "evaluate"]


@dataclass(frozen=True)
class EvalReport:
    label: str
    split: str
    n: int
    score: float
    invalid: int
    errors: int
    calls: int
    cache_hits: int
    run_dir: Path


async def evaluate(
    task: str | Path | TaskSpec,
    *,
    run: str | Path | None = None,
    split: str = "test",
    output: str | Path | None = None,
    backends: dict[str, Any] | None = None,
    probe: bool = True,
) -> EvalReport:
    """Score the task's seed (or ``run``'s best candidate) on ``split``; recorded in a new eval run.

    The pre-flight checks of :func:`promptopt.optimize` run first (``probe=False`` skips the probe).
    """
    spec = load_task(task) if isinstance(task, str | Path) else task
    if spec.metric is None:
        raise ConfigError("the task has no metric, so nothing can be scored; give one")
    await preflight(
        spec,
        probe=probe,
        skip=backends or (),
        task_file=task if isinstance(task, str | Path) else None,
    )
    out_dir = Path(output) if output is not None else Path(spec.output)
    params, label = None, "seed"
    if run is not None:
        params = _best_params(RunStore.open(run, output_dir=out_dir))
        label = f"best of {Path(str(run)).name}"
    store = RunStore.create(
        out_dir,
        task=spec.model_dump(mode="json"),
        task_path=str(getattr(spec, "path", "") or ""),
        run_id=None,
    )
    parts = build_parts(spec, store=store, backends=backends)
    try:
        engine = parts.engine(store, scoring_only=True)
        examples = getattr(parts.splits, split)
        evaluated = await engine.evaluate(
            params or parts.program.seed_params(), examples, split=split, origin="eval"
        )
        store.set_status("finished", detail=f"eval {split}")
    finally:
        await parts.aclose()
    stats = parts.test_llm.stats
    report = EvalReport(
        label=label,
        split=split,
        n=len(evaluated.results),
        score=evaluated.score,
        invalid=evaluated.invalid,
        errors=evaluated.errors,
        calls=stats.calls,
        cache_hits=stats.cache_hits,
        run_dir=store.root,
    )
    store.close()
    return report


def _best_params(store: RunStore) -> dict[str, Any]:
    path = store.root / "best_candidate.json"
    if path.exists():
        params: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["params"]
        return params
    checkpoint = store.latest_checkpoint()
    best_id = checkpoint[1].get("best_id") if checkpoint else None
    for row in store.candidates():
        if row.get("candidate_id", row.get("id")) == best_id:
            found: dict[str, Any] = row["params"]
            return found
    raise StoreError(f"run {store.run_id!r} has no best candidate yet")

"""The ``gepa`` library's own engine on a promptopt task: only the search differs.

``gepa.optimize`` searches; every evaluation goes through promptopt's engine (the
task file's program, its prompt rendering, answers constrained to the labels by
``choices``, the metric and the response cache), so the prompts the task model
reads, the scores and the cache hits are exactly those of promptopt's own runs of
the same task file. The reflection model is the task file's optimizer model,
called through promptopt's client with the library's own reflection prompt.
The library evolves the one text component ``system`` (the instruction), as
promptopt's ``gepa`` does on these tasks.

Runs in promptopt's environment; ``gepa`` comes from the peers' venv
(``--gepa-path``, its site-packages, appended to ``sys.path`` so that promptopt's
own dependencies win): the library has no required dependencies.

    python gepa_library.py --task-file run.yaml --gepa-path VENV/lib/python3.X/site-packages
        --max-calls 731 --max-reflections 40 --out result.json

``max_metric_calls`` is ``--max-calls``: the library counts every example it
evaluates, cached or not, so the backend calls it makes are at most that. The
search also stops after ``--max-reflections`` reflection calls (the benchmark's
cap on optimizer-model calls). Writes one JSON object to ``--out`` (the shape of
``run_peer.py``'s): best validation score, test accuracy, unparseable test outputs,
task- and optimizer-model calls and tokens, wall time, the final instruction and each
test row's score (``test_scores``, in the order of the test file); or, for a crash,
the error and its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from crash import frames

from promptopt.aio import LoopThread
from promptopt.session import build_parts
from promptopt.store import RunStore
from promptopt.task.data import in_file_order
from promptopt.task.loader import load_task

_ERROR_CHARS = 600
COMPONENT = "system"


class Adapter:
    """gepa's ``GEPAAdapter`` over promptopt's engine (``evaluate`` and the reflective
    dataset; the library's default proposer writes the new texts)."""

    def __init__(
        self, engine: Any, seed_params: dict[str, Any], loop: LoopThread, batch_type: type
    ) -> None:  # batch_type: gepa's EvaluationBatch
        self.engine, self.seed_params, self.loop = engine, seed_params, loop
        self.batch_type = batch_type
        self.propose_new_texts = None  # the library's own reflection

    def params(self, candidate: dict[str, str]) -> dict[str, Any]:
        return {**self.seed_params, COMPONENT: candidate[COMPONENT]}

    def evaluate(self, batch: list[Any], candidate: dict[str, str], capture_traces: bool = False):
        evaluated = self.loop.run(
            self.engine.evaluate(self.params(candidate), batch, split="val", origin="gepa")
        )
        results = list(evaluated.results)
        trajectories = [_trajectory(r) for r in results] if capture_traces else None
        return self.batch_type(outputs=[r.output for r in results],
                               scores=[float(r.score.value) for r in results],
                               trajectories=trajectories)  # fmt: skip

    def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
        records = [
            {"Inputs": t["inputs"], "Generated Outputs": t["output"], "Feedback": t["feedback"]}
            for t in eval_batch.trajectories or ()
        ]
        return {name: records for name in components_to_update}


def _trajectory(result: Any) -> dict[str, Any]:
    expected = result.example.target
    output = result.output if result.output is not None else f"(error: {result.error})"
    feedback = result.score.feedback or (
        f"Correct: the answer is {expected!r}." if result.score.value >= 1.0
        else f"Wrong: answered {output!r}, but the correct answer is {expected!r}."
    )  # fmt: skip
    return {"inputs": dict(result.example.inputs), "output": output, "feedback": feedback}


class ReflectionStop:
    """A gepa stopper: true once the reflection model has been called ``limit`` times."""

    def __init__(self, llm: Any, limit: int) -> None:
        self.llm, self.limit = llm, limit

    def __call__(self, gepa_state: Any) -> bool:
        return self.llm.stats.calls >= self.limit


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.append(args.gepa_path)
    import gepa
    from gepa.core.adapter import EvaluationBatch

    spec = load_task(args.task_file)
    store = RunStore.create(Path(spec.output), task=spec.model_dump(mode="json"),
                            task_path=str(args.task_file), run_id=None)  # fmt: skip
    parts = build_parts(spec, store=store)
    loop = LoopThread(name="gepa-library")
    report: dict[str, Any] = {"peer": "gepa_library", "max_calls": args.max_calls}
    started = time.perf_counter()
    try:
        engine = parts.engine(store)
        seed = parts.program.seed_params()
        adapter = Adapter(engine, dict(seed), loop, EvaluationBatch)

        def reflect(prompt: str) -> str:
            return loop.run(parts.optimizer_llm.achat(
                prompt, temperature=args.temperature, max_tokens=args.max_tokens))  # fmt: skip

        result = gepa.optimize(
            seed_candidate={COMPONENT: str(seed[COMPONENT])},
            trainset=list(parts.splits.train), valset=list(parts.splits.val), adapter=adapter,
            reflection_lm=reflect, reflection_minibatch_size=args.minibatch,
            candidate_selection_strategy="pareto", use_merge=True, max_merge_invocations=5,
            max_metric_calls=args.max_calls,
            stop_callbacks=[ReflectionStop(parts.optimizer_llm, args.max_reflections)],
            seed=args.seed, display_progress_bar=False, raise_on_exception=True,
            run_dir=None, track_best_outputs=False,
        )  # fmt: skip
        report["wall_s"] = round(time.perf_counter() - started, 1)
        best = result.best_candidate
        report["best_val"] = float(result.val_aggregate_scores[result.best_idx])
        report["candidates"] = len(result.candidates)
        report["metric_calls"] = result.total_metric_calls
        report["instruction"] = best[COMPONENT]
        _usage(report, parts)
        tester = parts.engine(store, scoring_only=True)
        tested = loop.run(tester.evaluate(adapter.params(best), parts.splits.test, split="test",
                                          origin="eval"))  # fmt: skip
        report["test_acc"], report["unparseable"] = tested.score, tested.invalid
        report["test_scores"] = in_file_order({r.example.id: r.score.value for r in tested.results})
        report["test_calls"] = parts.test_llm.stats.calls
        report["error"] = None
    except Exception as exc:  # a crash is reported as a crash, with its error
        report |= {"error": f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS],
                   "traceback": frames(exc),
                   "wall_s": round(time.perf_counter() - started, 1), "test_acc": None}  # fmt: skip
        _usage(report, parts)
    finally:
        loop.run(parts.aclose())
        loop.close()
        store.close()
    return report


def _usage(report: dict[str, Any], parts: Any) -> None:
    for role, llm in (("task", parts.task_llm), ("optimizer", parts.optimizer_llm)):
        stats = llm.stats
        report[f"{role}_calls"], report[f"{role}_tokens"] = stats.calls, stats.total_tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-file", required=True)
    parser.add_argument("--gepa-path", required=True, help="the site-packages that hold gepa")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-calls", type=int, default=731)
    parser.add_argument("--max-reflections", type=int, default=40)
    parser.add_argument("--minibatch", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run(args)
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

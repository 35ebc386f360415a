"""Racing on and off at the same budget: candidates scored, and the best's test accuracy.

The SmolLM2 setting of ``benchmarks/quality.py`` (SmolLM2-135M-Instruct the task
model, Qwen2.5-Coder-1.5B-Instruct proposing OPRO's instructions; its SST-2 and TREC
splits and seed program), for ``exemplars`` and ``opro``, each run twice from the
same seed cache: ``racing: off`` (every candidate on every validation row) and
``racing: on`` (the default: a candidate is dropped once a sign test on the rows
scored so far says it is worse than the best so far; see ``promptopt/racing.py``).
The budget (``--max-calls``, default 700: the seed's 100 validation calls, then
six candidates of 100 rows) binds, and the optimizers' configs ask for more
candidates than it pays for without racing (exemplars: 12 random sets and 6
mutations; opro: 30 steps of 2, since a step whose replies are all no-ops proposes
nothing), so what racing saves buys more candidates. The
exemplar search runs without its calibration in both arms: a search that
calibrates is never raced (racing reads uncalibrated scores, and calibration
rescues the leaning sets racing would drop).

    python benchmarks/racing.py [--task sst2,trec] [--optimizer exemplars,opro]
        [--max-calls 700] [--val 100] [--test-rows 300] [--jobs 2]

A candidate counts when it was scored on every validation row or dropped by
racing (the calibrations of the exemplar search are free and not counted; a
candidate the budget cut partway is not counted either). Prints one table per
task and as its last line one JSON object shaped
``{"sst2": {"exemplars": {"candidates_ratio", "test_delta", ...}, "opro": {...}},
"trec": {...}}``: ``candidates_ratio`` = candidates with racing over candidates
without, ``test_delta`` = best test accuracy with racing minus without.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before llama.cpp loads

import argparse  # noqa: E402
import asyncio  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from quality_tasks import CONFIGS, TASKS  # noqa: E402

from promptopt.api import aoptimize  # noqa: E402
from promptopt.store import RunStore  # noqa: E402

OPTIMIZERS = ("exemplars", "opro")
MAX_CALLS = 700
# more candidates than MAX_CALLS pays for without racing (six of 100 rows)
STAGES = {
    "exemplars": {"name": "exemplars",
                  "config": {**CONFIGS["exemplars"]["config"], "num_sets": 12, "mutations": 6,
                             "per_step": 4, "calibrate": False}},
    "opro": {"name": "opro", "config": {**CONFIGS["opro"]["config"], "steps": 30}},
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=",".join(TASKS), help="sst2, trec or both")
    parser.add_argument("--optimizer", default=",".join(OPTIMIZERS), help="exemplars, opro")
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test-rows", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, each in a process")
    parser.add_argument("--sst2-data", default=str(quality.DATA / "sst2"))
    parser.add_argument("--trec-data", default=str(quality.DATA / "trec"))
    parser.add_argument("--task-model", default=quality.TASK_MODEL)
    parser.add_argument("--optimizer-model", default=quality.OPTIMIZER_MODEL)
    parser.add_argument("--workdir", default=None, help="default: a new temporary folder")
    args = parser.parse_args(argv)
    args.tasks = quality._split(args.task, tuple(TASKS), "task")
    args.optimizers = quality._split(args.optimizer, OPTIMIZERS, "optimizer")
    args.runs = args.optimizers  # what quality.score_seed reads is only the task's data
    args.setting = "smollm2"  # its seeds and splits
    quality.check_data(args)
    return args


def counted(run_dir: Path, origin: str) -> dict[str, int]:
    """Candidates of a run's search scored on every validation row, and dropped by racing."""
    with RunStore.open(run_dir) as store:
        decisions = [d["payload"] for d in store.decisions() if d["kind"] == "step"]
        made = [c["id"] for c in store.candidates()
                if c["origin"] == origin and c["meta"].get("kind") != "calibration"]  # fmt: skip
    dropped = {d["id"] for p in decisions for d in p.get("dropped", [])}
    partial = {i for p in decisions for i in p.get("partial", [])}
    whole = {e["id"] for p in decisions for e in p.get("evaluated", [])}
    return {
        "whole": len([i for i in made if i in whole and i not in partial]),
        "dropped": len([i for i in made if i in dropped]),
    }


def run_one(args: argparse.Namespace, task: str, name: str, racing: bool, work: Path,
            backends: quality.Backends = None) -> dict[str, Any]:  # fmt: skip
    run = f"{name}-racing-{'on' if racing else 'off'}"
    cache = work / task / "cache" / run
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(work / task / "cache" / "seed", cache)
    spec = quality._spec(args, task, "exemplars", work, cache)
    spec |= {"name": f"{task}-{run}", "optimizer": [STAGES[name]], "racing": racing}
    path = quality._task_file(work, task, run, spec)
    started = time.perf_counter()
    result = asyncio.run(aoptimize(path, probe=False, backends=backends() if backends else None))
    wall = time.perf_counter() - started
    optimizer_calls = int(result.optimizer_usage.get("calls", 0))
    return {
        "task": task, "optimizer": name, "racing": racing, "scores": dict(result.scores),
        **counted(result.run_dir, name),
        "calls": int(result.usage.get("calls", 0)), "optimizer_calls": optimizer_calls,
        "wall_s": wall, "stopped": result.stopped,
        "ended_early": result.stages[-1]["ended_early"] if result.stages else "",
    }  # fmt: skip


def run_benchmark(args: argparse.Namespace, backends: quality.Backends = None) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="promptopt-racing-"))
    started = time.perf_counter()
    seeds = dict(zip(args.tasks, quality._in_pool(
        args.jobs, [(quality.score_seed, (args, t, work, backends)) for t in args.tasks]),
        strict=True))  # fmt: skip
    order = [(t, o, r) for t in args.tasks for o in args.optimizers for r in (False, True)]
    runs = quality._in_pool(
        args.jobs, [(run_one, (args, t, o, r, work, backends)) for t, o, r in order]
    )
    for r in runs:
        if r["calls"] > args.max_calls:
            raise AssertionError(f"{r['task']} {r['optimizer']}: over budget: {r}")
    return {"seeds": seeds, "runs": runs, "wall_s": time.perf_counter() - started, "work": work}


def summary(out: dict[str, Any]) -> dict[str, Any]:
    final: dict[str, Any] = {}
    for r in out["runs"]:
        final.setdefault(r["task"], {}).setdefault(r["optimizer"], {})[
            "on" if r["racing"] else "off"] = r  # fmt: skip
    result: dict[str, Any] = {}
    for task, by_optimizer in final.items():
        result[task] = {}
        for name, pair in by_optimizer.items():
            off, on = pair["off"], pair["on"]
            n_off, n_on = off["whole"] + off["dropped"], on["whole"] + on["dropped"]
            result[task][name] = {
                "candidates_ratio": round(n_on / n_off, 3) if n_off else None,
                "test_delta": round(on["scores"]["best_test"] - off["scores"]["best_test"], 4),
                "candidates_off": n_off, "candidates_on": n_on, "dropped_on": on["dropped"],
                "best_test_off": round(off["scores"]["best_test"], 4),
                "best_test_on": round(on["scores"]["best_test"], 4),
                "calls_off": off["calls"], "calls_on": on["calls"],
            }  # fmt: skip
    return result


def table(task: str, seed: dict, runs: list[dict]) -> list[str]:
    head = (f"{'run':<24}{'scored whole':>13}{'dropped':>8}{'best val':>9}{'best test':>10}"
            f"{'calls':>7}{'opt calls':>10}{'wall s':>8}  ended early")  # fmt: skip
    lines = [f"{TASKS[task].title}: seed val {seed['val']['score']:.3f}, "
             f"seed test {seed['test']['score']:.3f}", head]  # fmt: skip
    for r in runs:
        s = r["scores"]
        lines.append(
            f"{r['optimizer'] + (' racing on' if r['racing'] else ' racing off'):<24}"
            f"{r['whole']:>13}{r['dropped']:>8}{s['best_val']:>9.3f}{s['best_test']:>10.3f}"
            f"{r['calls']:>7}{r['optimizer_calls']:>10}{r['wall_s']:>8.0f}  {r['ended_early']}"
        )
    return lines


def main(argv: list[str] | None = None, backends: quality.Backends = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = run_benchmark(args, backends)
    for task in args.tasks:
        print("\n".join(table(task, out["seeds"][task],
                              [r for r in out["runs"] if r["task"] == task])))  # fmt: skip
        print()
    return quality.finish(out, summary(out))


if __name__ == "__main__":
    main()

"""Quality of every optimizer, one composition and the peers on SST-2 and TREC, in two settings.

Two settings (``quality_tasks.SETTINGS``): ``smollm2``, SmolLM2-135M-Instruct the task
model and Qwen2.5-Coder-1.5B-Instruct the optimizer and judge model (100 validation and
300 test rows); and ``qwen``, Qwen2.5-Coder-1.5B both, where instructions matter (50
validation and 200 test rows, a plainer SST-2 seed). Splits, seeds and configs are in
``quality_tasks.py``. Each run spends at most 731 optimization calls (``budget:
{max_calls: 731}``), of which at most 40 go to the optimizer model: each optimizer's
config bounds those (checked before the run from its worst case, and after it from
the count).

The composition is ``[opro, exemplars]``: on a 135M model the exemplars and the
calibration of the label scores move accuracy most, and OPRO's instruction is chosen
by the same metric on the same validation rows, so the exemplar stage picks
demonstrations for a better instruction and calibrates it.

The peers (``benchmarks/peers.py``) run in the same run, on the same splits, seeds and
models, after promptopt's runs of each setting: DSPy's ``GEPA`` and ``MIPROv2`` in
their own venv against llama.cpp's server, and the ``gepa`` library's engine through
promptopt's evaluator (the seed's cache as promptopt's runs get it). ``--peers none``
leaves them out.

Each task's seed is scored once on val and test with a response cache; every run
starts with a copy of that cache and no other, so its seed costs nothing and the
calls it reports are its own backend calls (a best equal to the seed is free on
test too). Runs go to ``--jobs`` worker processes (default 2, one llama.cpp thread
per model: both cores busy), longest first; each prints one line on stderr when it
ends (its best test and validation scores, calls, wall time and run folder).

Each finished run and peer is saved in the work folder (``benchmarks/saved_runs.py``):
run again with the same ``--workdir``, the benchmark reuses those made by the same code
(every source file of ``promptopt/`` and ``benchmarks/``) for the same task file and
rows, and runs the rest; a peer's crash is always run again. ``--fresh`` reuses nothing.

    python benchmarks/quality.py [--setting smollm2,qwen] [--task sst2,trec]
        [--optimizer opro,exemplars,...] [--peers dspy_gepa,dspy_miprov2,gepa_library|none]
        [--max-calls 731] [--val N] [--test-rows N] [--jobs 2] [--workdir DIR [--fresh]]

Prints one table per task and setting (seed and best on val and test, unparseable
outputs of the best on test, task and optimizer calls, tokens, wall time; each peer
or its crash; the majority class; promptopt's best against each peer, row by row),
and as its last line one JSON object:
``{"sst2": {best_test_acc, best_optimizer, seed_test_acc, calls, runs, peers, errors,
...}, "trec": {...}, "min_gain_over_seed": ..., "gain_over_seed": ..., "qwen": {"sst2":
{...}, "trec": {...}, "min_gain_over_seed": ...}}``: the ``smollm2`` setting at the top
level, the ``qwen`` setting under ``"qwen"``. ``peers`` holds each peer's test
accuracy (null for a crash, whose error is in ``errors``); ``beats_peers`` says whether
one of promptopt's runs is at least every peer's plus 0.02 with no more task-model calls
than each (``beats_peers_with``: the best such run, or null);
``versus_peers`` pairs promptopt's best with each peer row by row on test (wins,
losses, exact McNemar ``p``; null for a peer that reported no rows);
``min_gain_over_seed`` is the smallest test gain over the seed among the setting's
rated optimizers (``smollm2``: mcts, spo, promst, opro; ``qwen``: those, optoprime and
gepa), each on the task where it does best.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before llama.cpp loads: Qwen twice as fast

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers as peer_runs  # noqa: E402
import saved_runs  # noqa: E402
from quality_tasks import (  # noqa: E402
    MAX_CALLS,
    MAX_OPTIMIZER_CALLS,
    OPTIMIZER_MODEL,
    RATED,
    RUNS,
    SETTINGS,
    TASK_MODEL,
    TASKS,
    Task,
    optimizer_call_bound,
    stages_of,
)

from promptopt.api import aoptimize  # noqa: E402
from promptopt.evaluate import evaluate  # noqa: E402
from promptopt.stats import mcnemar_exact, p_text, paired_counts  # noqa: E402
from promptopt.store import RunStore  # noqa: E402
from promptopt.task.data import in_file_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
Backends = Callable[[], Mapping[str, Any]] | None  # fresh backends per run (tests: fakes)
MARGIN = 0.02  # a run of promptopt beats a peer by at least this, at no more task calls


def _split(value: str, known: tuple[str, ...], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown!r}; expected some of {', '.join(known)}")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default=",".join(SETTINGS), help="smollm2, qwen or both")
    parser.add_argument("--task", default=",".join(TASKS), help="sst2, trec or both")
    parser.add_argument("--optimizer", default=",".join(RUNS), help=f"some of {', '.join(RUNS)}")
    parser.add_argument("--peers", default=",".join(peer_runs.PEERS),
                        help=f"some of {', '.join(peer_runs.PEERS)}, or none")  # fmt: skip
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS)
    parser.add_argument("--val", type=int, default=None, help="default: the setting's")
    parser.add_argument("--test-rows", type=int, default=None, help="default: the setting's")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, each in a process")
    parser.add_argument("--sst2-data", default=str(DATA / "sst2"))
    parser.add_argument("--trec-data", default=str(DATA / "trec"))
    parser.add_argument("--task-model", default=None, help="default: the setting's")
    parser.add_argument("--optimizer-model", default=OPTIMIZER_MODEL)
    parser.add_argument("--venv", type=Path, default=peer_runs.PEERS_DIR / ".venv",
                        help="the peers' venv (made on first use)")  # fmt: skip
    parser.add_argument(
        "--workdir",
        default=None,
        help="default: a new temporary folder; a folder used before keeps its "
        "finished runs, and those made by the same code are reused",
    )
    parser.add_argument("--fresh", action="store_true",
                        help="run everything again, reusing no finished run of --workdir")  # fmt: skip
    args = parser.parse_args(argv)
    args.settings = _split(args.setting, tuple(SETTINGS), "setting")
    args.tasks = _split(args.task, tuple(TASKS), "task")
    args.runs = _split(args.optimizer, RUNS, "optimizer")
    args.peer_list = [] if args.peers == "none" else _split(args.peers, peer_runs.PEERS, "peer")
    check_data(args)
    return args


def for_setting(args: argparse.Namespace, name: str) -> argparse.Namespace:
    """``args`` for one setting: its task model and test rows where not given (the
    validation rows are per task: :func:`val_of`)."""
    setting = SETTINGS[name]
    return argparse.Namespace(**{
        **vars(args), "setting": name, "task_model": args.task_model or setting.task_model,
        "test_rows": args.test_rows or setting.test})  # fmt: skip


def val_of(args: argparse.Namespace, task: str) -> int:
    """The validation rows of ``task``: ``--val``, or the setting's for that task."""
    return int(args.val or SETTINGS[args.setting].val_of(task))


def task_of(args: argparse.Namespace, task: str) -> Task:
    """The task as ``args``' setting runs it."""
    return SETTINGS[args.setting].task(task)


def check_data(args: argparse.Namespace) -> None:
    """Every task's data files are there (before any model loads), or SystemExit."""
    for task in args.tasks:
        folder = Path(getattr(args, f"{task}_data"))
        missing = [name for name in TASKS[task].files if not (folder / name).is_file()]
        if missing:
            raise SystemExit(
                f"{task}: no {', '.join(missing)} in {folder}; give --{task}-data "
                f"(the folder of ../shared/data/{task})"
            )


# -- one process's work ------------------------------------------------------------


def _prepare(args: argparse.Namespace, task: str, work: Path) -> dict[str, Path]:
    data = Path(getattr(args, f"{task}_data")).resolve()
    return task_of(args, task).write_data(data, work / task / "data", val=val_of(args, task),
                                          test=args.test_rows)  # fmt: skip


def _spec(args: argparse.Namespace, task: str, run: str, work: Path, cache: Path) -> dict:
    models = {"task": args.task_model, "optimizer": args.optimizer_model}
    paths = {s: work / task / "data" / f"{s}.jsonl" for s in ("train", "val", "test")}
    return task_of(args, task).spec(
        run, paths=paths, models=models, max_calls=args.max_calls, cache=cache,
        output=work / task / "traces",
    )  # fmt: skip


def _task_file(work: Path, task: str, run: str, spec: dict) -> Path:
    path = work / task / f"{run}.yaml"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def score_seed(args: argparse.Namespace, task: str, work: Path, backends: Backends = None) -> dict:
    """Score the seed on val and test once, into the task's seed cache."""
    _prepare(args, task, work)
    cache = work / task / "cache" / "seed"
    path = _task_file(work, task, "seed", _spec(args, task, "seed", work, cache))
    started = time.perf_counter()
    out = {}
    for split in ("val", "test"):
        report = asyncio.run(
            evaluate(path, split=split, probe=False, backends=backends() if backends else None)
        )
        out[split] = {"score": report.score, "invalid": report.invalid, "calls": report.calls}
    out["wall_s"] = time.perf_counter() - started
    return out


def run_one(
    args: argparse.Namespace, task: str, run: str, work: Path, backends: Backends = None,
    key: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One optimization run from a copy of the seed cache; its figures as plain data,
    saved under ``key`` in the work folder when given (see :func:`_run_key`)."""
    cache = work / task / "cache" / run
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(work / task / "cache" / "seed", cache)
    path = _task_file(work, task, run, _spec(args, task, run, work, cache))
    started = time.perf_counter()
    result = asyncio.run(aoptimize(path, probe=False, backends=backends() if backends else None))
    wall = time.perf_counter() - started
    usage = result.usage
    qwen = int(result.optimizer_usage.get("calls", 0)) + int(result.judge_usage.get("calls", 0))
    out = {
        "task": task,
        "run": run,
        "scores": dict(result.scores),
        "unparseable": result.invalid["best_test"],
        "calls": int(usage.get("calls", 0)),  # backend calls; cached and replayed are free
        "cache_hits": int(usage.get("cache_hits", 0)),
        "task_calls": int(usage.get("calls", 0)) - qwen,
        "optimizer_calls": qwen,
        "tokens": int(usage.get("total_tokens", 0)),
        "test_calls": int(result.test_usage.get("calls", 0)),
        "wall_s": wall,
        "stopped": result.stopped,
        "best_prompt": result.best_prompt_path.read_text(encoding="utf-8"),
        "test_scores": _test_scores(result.run_dir, result.best.id),
        "run_dir": str(result.run_dir),
    }
    if key is not None:
        saved_runs.save(_saved_path(work, task, run), key, out)
    return out


def _saved_path(work: Path, task: str, run: str) -> Path:
    return work / task / "results" / f"{run}.json"


def _run_key(args: argparse.Namespace, task: str, run: str, work: Path, code: str) -> dict:
    """What a finished run must share with this one to be reused: the code, its task file
    and the rows it reads."""
    spec = _spec(args, task, run, work, work / task / "cache" / run)
    data = work / task / "data"
    return {"code": code, "spec": spec,
            "data": saved_runs.files_digest(data / f"{s}.jsonl" for s in ("train", "val", "test"))}  # fmt: skip


def _test_scores(run_dir: Path, candidate: str) -> list[float]:
    """The candidate's score on each test row, in the test file's order (for a paired test
    against each peer, which scores the same rows in that order)."""
    store = RunStore.open(run_dir)
    try:
        rows = store.evaluations(candidate_id=candidate, split="test")
    finally:
        store.close()
    return in_file_order({r["example_id"]: float(r["score"] or 0.0) for r in rows})


# -- the whole benchmark ----------------------------------------------------------


def _in_pool(
    jobs: int, calls: list[tuple[Callable, tuple]], done: Callable[[Any], None] | None = None
) -> list[Any]:
    """Each call's result, in the order of ``calls``; ``done`` sees each as it finishes."""
    if jobs <= 1:
        results = []
        for fn, a in calls:
            results.append(fn(*a))
            if done is not None:
                done(results[-1])
        return results
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *a) for fn, a in calls]
        for future in as_completed(futures):
            if done is not None:
                done(future.result())
        return [f.result() for f in futures]


def _finished(run: dict[str, Any], how: str = "finished") -> None:
    """One line on stderr as each run ends (or is reused): a run of hours shows its
    progress, and what finished is known even if the benchmark dies before its tables."""
    s = run["scores"]
    print(f"{how} {run['task']} {run['run']}: best test {s['best_test']:.3f} (validation "
          f"{s['best_val']:.3f}; seed {s['seed_test']:.3f}), {run['task_calls']} task calls, "
          f"{run['wall_s']:.0f} s; run folder {run['run_dir']}", file=sys.stderr, flush=True)  # fmt: skip


PeerRunner = peer_runs.Runner | None  # tests: a fake in place of the peers' processes


def run_benchmark(
    args: argparse.Namespace, backends: Backends = None, peer_runner: PeerRunner = None
) -> dict[str, Any]:
    """Every setting's seeds, runs and peers: ``{"settings": {name: {...}}, "wall_s"}``."""
    for run in args.runs:
        bound = optimizer_call_bound(stages_of(run))
        if bound > MAX_OPTIMIZER_CALLS:
            raise SystemExit(
                f"{run}: up to {bound} optimizer-model calls, over {MAX_OPTIMIZER_CALLS}"
            )
    work = Path(args.workdir or tempfile.mkdtemp(prefix="promptopt-quality-"))
    started = time.perf_counter()
    python, gepa_path = _peers_env(args, peer_runner)
    settings = {}
    for name in args.settings:
        sargs = for_setting(args, name)
        settings[name] = run_setting(sargs, work / name, backends)
        settings[name]["peers"] = _peers(sargs, work / name, peer_runner, python, gepa_path)
    return {"settings": settings, "wall_s": time.perf_counter() - started, "work": work}


def run_setting(args: argparse.Namespace, work: Path, backends: Backends = None) -> dict[str, Any]:
    """One setting's seeds and promptopt runs (``args`` from :func:`for_setting`)."""
    started = time.perf_counter()
    seeds = dict(zip(args.tasks, _in_pool(
        args.jobs, [(score_seed, (args, t, work, backends)) for t in args.tasks]), strict=True))  # fmt: skip
    order = sorted(
        ((t, r) for t in args.tasks for r in args.runs),
        key=lambda tr: (tr[1] == "exemplars", tr[0] != "trec"),  # longest first
    )
    code = saved_runs.code_fingerprint()
    keys = {(t, r): _run_key(args, t, r, work, code) for t, r in order}
    results = {}
    for t, r in order:
        earlier = None if args.fresh else saved_runs.load(_saved_path(work, t, r), keys[t, r])
        if earlier is not None:
            _finished(earlier, "reused")
            results[t, r] = earlier
    todo = [tr for tr in order if tr not in results]
    done = _in_pool(args.jobs, [(run_one, (args, t, r, work, backends, keys[t, r]))
                                for t, r in todo], done=_finished)  # fmt: skip
    results |= dict(zip(todo, done, strict=True))
    runs = [results[tr] for tr in order]
    for r in runs:
        if r["optimizer_calls"] > MAX_OPTIMIZER_CALLS or r["calls"] > args.max_calls:
            raise AssertionError(f"{r['task']} {r['run']}: over budget: {r}")
    return {"seeds": seeds, "runs": runs, "wall_s": time.perf_counter() - started, "work": work}


def _peers_env(args: argparse.Namespace, runner: PeerRunner) -> tuple[Path, str]:
    """The peers' venv's python (made on first use) and where ``gepa`` is installed."""
    if not args.peer_list or runner is not None:
        return Path(sys.executable), "gepa"
    python = peer_runs.peers_python(args.venv)
    return python, peer_runs.site_packages(python)


def _peers(
    args: argparse.Namespace, work: Path, runner: PeerRunner, python: Path, gepa_path: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each peer on each task of the setting, from the seed caches of promptopt's runs."""
    if not args.peer_list:
        return {}
    started = time.perf_counter()
    with ExitStack() as stack:
        dspy = set(args.peer_list) & set(peer_runs.DSPY)
        urls = ("http://task", "http://optimizer")
        if runner is None and dspy:
            urls = peer_runs.servers(stack, SETTINGS[args.setting])
        found = peer_runs.run_peers(
            args.tasks, args.peer_list, setting=SETTINGS[args.setting], python=python,
            urls=urls, max_calls=args.max_calls, val=args.val, test=args.test_rows,
            folder=work / "peers", runner=runner or peer_runs.subprocess_runner,
            sources={t: Path(getattr(args, f"{t}_data")) for t in args.tasks},
            gepa_path=gepa_path,
            seed_caches={t: work / t / "cache" / "seed" for t in args.tasks},
            code=saved_runs.code_fingerprint(), fresh=args.fresh,
        )  # fmt: skip
    print(f"peers of the {args.setting} setting: {time.perf_counter() - started:.0f} s")
    return found


def majority(path: Path) -> tuple[str, float]:
    labels = Counter(json.loads(line)["label"] for line in path.open(encoding="utf-8"))
    label, count = labels.most_common(1)[0]
    return label, count / sum(labels.values())


def table(
    task: str, seed: dict, runs: list[dict], work: Path, *, models: tuple[str, str] = (
        TASK_MODEL, OPTIMIZER_MODEL), peers: Mapping[str, dict[str, Any]] | None = None,
) -> list[str]:  # fmt: skip
    label, share = majority(work / task / "data" / "test.jsonl")
    head = (f"{'method':<50}{'seed val':>9}{'best val':>9}{'seed test':>10}{'best test':>10}"
            f"{'unparse':>8}{'task calls':>11}{'opt calls':>10}{'tokens':>9}{'wall s':>8}")  # fmt: skip
    lines = [f"{TASKS[task].title}: {models[0]} task model, {models[1]} optimizer and judge, "
             f"seed scored once ({seed['val']['calls'] + seed['test']['calls']} calls, "
             f"{seed['wall_s']:.0f} s, shared through the cache)", head]  # fmt: skip
    for r in runs:
        s = r["scores"]
        lines.append(
            f"{'promptopt ' + r['run']:<50}{s['seed_val']:>9.3f}{s['best_val']:>9.3f}"
            f"{s['seed_test']:>10.3f}{s['best_test']:>10.3f}{r['unparseable']!s:>8}"
            f"{r['task_calls']:>11}{r['optimizer_calls']:>10}{r['tokens']:>9}{r['wall_s']:>8.0f}"
        )
    for name, r in (peers or {}).items():
        if r.get("error"):
            lines.append(f"{'peer ' + name:<50} crashed after {r.get('wall_s', 0):.0f} s, "
                         f"{r.get('task_calls', '?')} task calls: {r['error'][:120]}")  # fmt: skip
            continue
        best = "" if r.get("best_val") is None else f"{r['best_val']:.3f}"
        tokens = int(r.get("task_tokens", 0)) + int(r.get("optimizer_tokens", 0))
        lines.append(
            f"{'peer ' + name:<50}{'':>9}{best:>9}{'':>10}{r['test_acc']:>10.3f}"
            f"{r.get('unparseable', 0)!s:>8}{r.get('task_calls', 0):>11}"
            f"{r.get('optimizer_calls', 0):>10}{tokens:>9}{r.get('wall_s', 0):>8.0f}"
        )
    lines.append(f"{f'always {label!r} (no model)':<50}{'':>38}{share:>10.3f}")
    best = max(runs, key=lambda r: r["scores"]["best_test"]) if runs else {}
    for name, r in (peers or {}).items():
        versus = None if r.get("error") else paired(best.get("test_scores"), r.get("test_scores"))
        if versus is not None:
            lines.append(f"  promptopt {best['run']} against peer {name} on test: "
                         f"{versus['wins']} wins, {versus['losses']} losses, "
                         f"{p_text(versus['p'])} (McNemar exact)")  # fmt: skip
    if peers and runs:
        winner = _versus_peers(best, runs, peers)["beats_peers_with"]
        lines.append(f"  promptopt {winner} beats every peer by {MARGIN} or more at no more "
                     "task-model calls" if winner else f"  no run of promptopt beats every "
                     f"peer by {MARGIN} at no more task-model calls")  # fmt: skip
    return lines


def summary(out: dict[str, Any], rated: tuple[str, ...] = RATED) -> dict[str, Any]:
    """One setting's object: per task the best run and the peers, and the smallest gain
    over the seed among ``rated``."""
    final: dict[str, Any] = {}
    gains: dict[str, float] = {}
    for task in out["seeds"]:
        runs = [r for r in out["runs"] if r["task"] == task]
        best = max(runs, key=lambda r: r["scores"]["best_test"])
        final[task] = {
            "best_test_acc": round(best["scores"]["best_test"], 4),
            "best_optimizer": best["run"],
            "seed_test_acc": round(out["seeds"][task]["test"]["score"], 4),
            "calls": best["calls"],
            "runs": {r["run"]: {"best_val": round(r["scores"]["best_val"], 4),
                                "best_test": round(r["scores"]["best_test"], 4),
                                "calls": r["calls"], "optimizer_calls": r["optimizer_calls"],
                                "unparseable": r["unparseable"], "wall_s": round(r["wall_s"])}
                     for r in runs},
        }  # fmt: skip
        final[task] |= _versus_peers(best, runs, out.get("peers", {}).get(task, {}))
        for r in runs:
            if r["run"] in rated:
                gain = r["scores"]["best_test"] - r["scores"]["seed_test"]
                gains[r["run"]] = max(gains.get(r["run"], gain), gain)
    final["min_gain_over_seed"] = round(min(gains.values()), 4) if gains else None
    final["gain_over_seed"] = {name: round(g, 4) for name, g in gains.items()}
    final["wall_s"] = round(out["wall_s"])
    return final


def _versus_peers(best: dict, runs: list[dict], peers: Mapping[str, dict]) -> dict[str, Any]:
    """The peers' test accuracies and errors, and the bars against them."""
    if not peers:
        return {}
    out: dict[str, Any] = {
        "peers": {n: None if r.get("error") else round(r["test_acc"], 4) for n, r in peers.items()},
        "errors": {n: r["error"] for n, r in peers.items() if r.get("error")},
        "peer_task_calls": {n: r.get("task_calls") for n, r in peers.items()},
    }  # fmt: skip
    ok = [r for r in peers.values() if not r.get("error")]
    # a run a user could pick instead of any peer: above each by the margin at no more
    # task-model calls than each (the best on test may have cost more than a peer: a
    # costlier better run does not undo a cheaper one's win)
    beating = [run for run in (runs or [best]) if all(
        # rounded: accuracies are counts over the rows, and 0.925 + 0.02 > 0.945 in floats
        round(run["scores"]["best_test"] - r["test_acc"], 6) >= MARGIN
        and run["task_calls"] <= int(r.get("task_calls") or 0) for r in ok)]  # fmt: skip
    out["beats_peers"] = bool(beating)
    out["beats_peers_with"] = (
        max(beating, key=lambda r: r["scores"]["best_test"]).get("run") if beating else None
    )
    out["versus_peers"] = {n: paired(best.get("test_scores"), r.get("test_scores")) for n, r in
                           peers.items() if not r.get("error")}  # fmt: skip
    ours = next((r for r in runs if r["run"] == "gepa"), None)
    library = peers.get("gepa_library")
    if ours is not None and library and not library.get("error"):
        out["gepa_minus_library"] = round(ours["scores"]["best_test"] - library["test_acc"], 4)
    return out


def paired(ours: list[float] | None, theirs: list[float] | None) -> dict[str, Any] | None:
    """promptopt's best against a peer on the same test rows: the rows only ours got right
    (wins), only theirs (losses), and the exact McNemar p-value; None when either side
    did not report its rows or they differ in number."""
    if not ours or not theirs or len(ours) != len(theirs):
        return None
    wins, losses, _ = paired_counts(theirs, ours)
    return {"wins": wins, "losses": losses, "p": round(mcnemar_exact(wins, losses), 4)}


def main(
    argv: list[str] | None = None, backends: Backends = None, peer_runner: PeerRunner = None
) -> dict[str, Any]:
    args = parse_args(argv)
    out = run_benchmark(args, backends, peer_runner)
    final: dict[str, Any] = {}
    for name, got in out["settings"].items():
        sargs = for_setting(args, name)
        print(f"== {name} setting ==")
        for task in args.tasks:
            runs = [r for r in got["runs"] if r["task"] == task]
            models = (sargs.task_model, args.optimizer_model)
            print("\n".join(table(task, got["seeds"][task], runs, got["work"], models=models,
                                  peers=got["peers"].get(task))))  # fmt: skip
            for r in runs:
                print(f"  {r['run']} best ({r['stopped']}): "
                      f"{' '.join(r['best_prompt'].split())[:160]}")  # fmt: skip
            for peer, r in got["peers"].get(task, {}).items():
                print(f"  peer {peer}: {' '.join(str(r.get('instruction', '')).split())[:160]}")
            print()
        part = summary(got, SETTINGS[name].rated)
        if name == "smollm2":
            final |= part
        else:
            final[name] = part
    final["total_wall_s"] = round(out["wall_s"])
    return finish(out, final)


def finish(out: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """Print the wall time and, as the last line, ``final`` as one JSON object."""
    print(f"total wall time {out['wall_s']:.0f} s; runs in {out['work']}")
    print(json.dumps(final))
    return final


if __name__ == "__main__":
    main()

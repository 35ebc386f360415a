"""The peers, run as their users run them, on the quality benchmark's tasks and models.

- ``dspy_gepa`` and ``dspy_miprov2`` (``benchmarks/peers/run_peer.py``): DSPy's
  ``GEPA`` and ``MIPROv2`` in a venv of their own, ``benchmarks/peers/.venv``, made
  on first use from ``benchmarks/peers/requirements.txt`` (``dspy[optuna]==3.4.1``,
  ``gepa==0.1.4``): never in promptopt's environment. Both models are served by
  llama.cpp's OpenAI-compatible server (promptopt's launcher, one thread each).
- ``gepa_library`` (``benchmarks/peers/gepa_library.py``): the ``gepa`` library's
  own engine (imported from that venv) with an adapter around promptopt's evaluator:
  the same task file, prompt rendering, ``choices``-constrained answers and response
  cache as promptopt's runs, so that only the search differs.

The settings, splits, seed instructions and labels are ``quality_tasks.py``'s
(``smollm2``: SmolLM2-135M the task model, Qwen2.5-Coder-1.5B reflecting / proposing;
``qwen``: Qwen2.5-Coder-1.5B both), so the figures sit beside promptopt's in
``benchmarks/quality.py``, which runs this module's :func:`run_peers` in the same
run. Each peer gets ``--max-calls`` metric calls (GEPA's ``max_metric_calls``;
MIPROv2 runs ``auto="light"`` and its calls are reported); the ``gepa`` library also
stops after 40 reflections, the cap of promptopt's runs on optimizer-model calls.

    python benchmarks/peers.py [--setting smollm2|qwen] [--task sst2,trec]
        [--peer dspy_gepa,dspy_miprov2,gepa_library] [--max-calls 731]
        [--val N] [--test-rows N] [--data ../shared/data] [--workdir DIR [--fresh]]

Prints one table per task (best on validation, test accuracy, unparseable test
outputs, task- and optimizer-model calls and tokens, wall time; a crash as a row with
its error) and, last, one JSON line ``{task: {peer: {...}}}``; a crashed peer has
``test_acc`` null and its ``error``. A peer runs for up to an hour or more: its own
output goes to ``<task>/<peer>.log`` in the work folder, and a line every ten minutes
says how long it has run and what it last wrote. With ``--workdir`` the folder stays,
and a peer's result saved there under the same code, task, rows and cap is reused
(``--fresh`` runs it again; a crash is always run again). ``dspy_gepa`` keeps its
state in ``<task>/dspy_gepa.state`` there (GEPA's ``log_dir``): started again after a
kill, with the same peer scripts, command and data, it resumes where GEPA last saved
(``resumed`` in its result counts the earlier processes), however the rest of the
code changed; ``--fresh`` starts it over.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import saved_runs  # noqa: E402
from quality_tasks import (  # noqa: E402
    MAX_CALLS,
    MAX_OPTIMIZER_CALLS,
    REFLECTION_TOKENS,
    SETTINGS,
    TASKS,
    Setting,
    Task,
)

from promptopt.llm import weights  # noqa: E402
from promptopt.testing.llamacpp import LlamaCppServer  # noqa: E402

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
RUNNER = PEERS_DIR / "run_peer.py"
LIBRARY = PEERS_DIR / "gepa_library.py"
DATA = HERE.parents[1] / "shared" / "data"
DSPY = ("dspy_gepa", "dspy_miprov2")
PEERS = (*DSPY, "gepa_library")
PROGRESS_S = 600.0  # a running peer's progress line, this often
# a peer's process: its command and the log file its output goes to
_NOT_KEYED = ("--task-url", "--optimizer-url", "--out")
Runner = Callable[[list[str], Path], subprocess.CompletedProcess[str]]


def peers_python(venv: Path) -> Path:
    """The peers' venv's python, made and filled from requirements.txt when it lacks them."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import dspy, gepa, optuna"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"making the peers' venv {venv} (dspy, gepa) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                    str(PEERS_DIR / "requirements.txt")], check=True)  # fmt: skip
    return python


def site_packages(python: Path) -> str:
    """The peers' venv's site-packages (where ``gepa`` is), asked of its python."""
    code = "import gepa, os; print(os.path.dirname(os.path.dirname(gepa.__file__)))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def library_command(task_file: Path, gepa_path: str, max_calls: int, out: Path) -> list[str]:
    """``gepa_library.py`` in promptopt's own python, ``gepa`` from the peers' venv."""
    return [sys.executable, str(LIBRARY), "--task-file", str(task_file), "--gepa-path",
            gepa_path, "--max-calls", str(max_calls), "--max-reflections",
            str(MAX_OPTIMIZER_CALLS), "--max-tokens", str(REFLECTION_TOKENS),
            "--out", str(out)]  # fmt: skip


def library_task(
    task: Task, setting: Setting, data: Path, folder: Path, max_calls: int,
    seed_cache: Path | None,
) -> Path:  # fmt: skip
    """The task file the ``gepa`` library's run evaluates through (promptopt's spec of a
    ``gepa`` run of this task and setting), with a copy of the seed's cache if given."""
    cache = folder / "cache" / "gepa_library"
    shutil.rmtree(cache, ignore_errors=True)
    if seed_cache is not None and seed_cache.exists():
        shutil.copytree(seed_cache, cache)
    paths = {s: data / f"{s}.jsonl" for s in ("train", "val", "test")}
    models = {"task": setting.task_model, "optimizer": SETTINGS["qwen"].task_model}
    spec = task.spec("gepa", paths=paths, models=models, max_calls=max_calls, cache=cache,
                     output=folder / "traces")  # fmt: skip
    spec["name"] = f"{task.name}-gepa-library"
    # the library's own max_metric_calls is its cap; it may overshoot it by the iteration in
    # progress, and its reflections come on top: promptopt's budget is only a safety net here
    spec["budget"] = {"max_calls": 2 * max_calls}
    path = folder / "gepa_library.yaml"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def peer_command(
    python: Path, peer: str, task: Task, data: Path, urls: tuple[str, str], max_calls: int,
    out: Path,
) -> list[str]:  # fmt: skip
    return [
        str(python), str(RUNNER), "--peer", peer, "--data", str(data), "--input", task.input,
        "--labels", ",".join(task.labels), "--instruction", task.system,
        "--task-url", urls[0], "--optimizer-url", urls[1], "--max-calls", str(max_calls),
        "--optimizer-tokens", str(REFLECTION_TOKENS), "--out", str(out),
    ]  # fmt: skip


def keep_state(
    command: list[str], data: Path, state: Path, fresh: bool, log: Path
) -> list[str]:  # fmt: skip
    """``command`` told to keep a resumable state in ``state``: the state left there by an
    earlier run of the same peer scripts, command and data is kept (the run resumes from
    it, and the earlier process's ``log`` is kept as ``<log>.1``, ``.2``, ...), any other is
    removed first, as with ``fresh``."""
    runner_files = sorted(PEERS_DIR.glob("*.py")) + [PEERS_DIR / "requirements.txt"]
    key = {"peer": saved_runs.files_digest(runner_files),
           "data": saved_runs.files_digest(data / f"{s}.jsonl" for s in ("train", "val", "test")),
           # its options (pairs after the python and script paths), but the servers'
           # addresses, which change from run to run, and the result's path
           "options": {flag: value for flag, value in zip(command[2::2], command[3::2],
                       strict=False) if flag not in _NOT_KEYED}}  # fmt: skip
    if fresh or saved_runs.load(state / "key.json", key) is None:
        shutil.rmtree(state, ignore_errors=True)
    saved_runs.save(state / "key.json", key, {})
    if (state / "gepa_state.bin").exists():
        print(f"  resuming from the state GEPA saved in {state}", flush=True)
        if log.exists():
            earlier = 1 + sum(1 for _ in log.parent.glob(f"{log.name}.*"))
            log.rename(log.with_name(f"{log.name}.{earlier}"))
    return [*command, "--state", str(state)]


def run_one(command: list[str], out: Path, runner: Runner, log: Path) -> dict[str, Any]:
    """One peer's result; a process that died without one is reported as a crash."""
    started = time.perf_counter()
    proc = runner(command, log)
    if out.exists():
        return dict(json.loads(out.read_text(encoding="utf-8")))
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"error": f"no result: {tail[0]}", "test_acc": None,
            "wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip


def run_peers(
    tasks: Sequence[str], peers: Sequence[str], *, setting: Setting, python: Path,
    urls: tuple[str, str], max_calls: int, val: int | None, test: int, folder: Path,
    runner: Runner,
    sources: Mapping[str, Path], gepa_path: str = "",
    seed_caches: Mapping[str, Path] | None = None, code: str | None = None,
    fresh: bool = False,
) -> dict[str, dict[str, dict[str, Any]]]:  # fmt: skip
    """Every peer on every task of ``setting`` (``sources``: task -> its data folder;
    ``val`` rows of validation, or the setting's for each task when None);
    ``seed_caches`` (task -> a response cache holding the seed's answers) seeds the
    ``gepa`` library's cache as promptopt's runs are. With ``code`` (the code's
    fingerprint, :func:`saved_runs.code_fingerprint`), each peer's result is saved in
    ``folder`` and, unless ``fresh``, a result saved earlier under the same code, task,
    rows and limits is reused instead of running the peer again (a crash is never
    reused: it is run again)."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in tasks:
        task = setting.task(name)
        data = folder / name / "data"
        task.write_data(sources[name], data, val=val or setting.val_of(name), test=test)
        for peer in peers:
            out = folder / name / f"{peer}.json"
            kept = folder / name / f"{peer}.saved.json"
            key = {"code": code, "setting": setting.name, "task": name, "peer": peer,
                   "max_calls": max_calls, "data": saved_runs.files_digest(
                       data / f"{s}.jsonl" for s in ("train", "val", "test"))}  # fmt: skip
            earlier = None if code is None or fresh else saved_runs.load(kept, key)
            if earlier is not None:
                print(f"{task.title} ({setting.name}): {peer} reused from {kept}", flush=True)
                results.setdefault(name, {})[peer] = earlier
                continue
            log = folder / name / f"{peer}.log"
            print(f"{task.title} ({setting.name}): {peer} ... (its output: {log})", flush=True)
            out.unlink(missing_ok=True)  # an earlier run's result is never read as this one's
            if peer == "gepa_library":
                seed = (seed_caches or {}).get(name)
                task_file = library_task(task, setting, data, folder / name, max_calls, seed)
                command = library_command(task_file, gepa_path, max_calls, out)
            else:
                command = peer_command(python, peer, task, data, urls, max_calls, out)
            if peer == "dspy_gepa":
                state = folder / name / f"{peer}.state"
                command = keep_state(command, data, state, fresh, log)
            result = run_one(command, out, runner, log)
            if code is not None and not result.get("error"):
                saved_runs.save(kept, key, result)
            results.setdefault(name, {})[peer] = result
    return results


def print_tables(results: dict[str, dict[str, dict[str, Any]]], setting: Setting) -> None:
    head = (f"{'peer':<14}{'best val':>9}{'test':>7}{'unparse':>8}{'task calls':>11}"
            f"{'opt calls':>10}{'tokens':>9}{'wall s':>8}")  # fmt: skip
    for name, rows in results.items():
        print(
            f"\n{TASKS[name].title}: {setting.task_model} task model, "
            f"{SETTINGS['qwen'].task_model} reflecting ({setting.name} setting)"
        )
        print(head)
        for peer, r in rows.items():
            if r.get("error"):
                print(f"{peer} crashed: {r['error'][:100]}")
                continue
            best = "-" if r.get("best_val") is None else f"{r['best_val']:.3f}"
            tokens = int(r.get("task_tokens", 0)) + int(r.get("optimizer_tokens", 0))
            print(f"{peer:<14}{best:>9}{r['test_acc']:>7.3f}{r['unparseable']:>8}"
                  f"{r['task_calls']:>11}{r['optimizer_calls']:>10}{tokens:>9}"
                  f"{r['wall_s']:>8.0f}")  # fmt: skip
            demos = f" (+ {r['demos']} demonstrations)" if r.get("demos") else ""
            print(f"  instruction: {' '.join(str(r.get('instruction', '')).split())[:160]}{demos}")
            if r.get("resumed"):
                print(f"  resumed from its saved state {r['resumed']} time(s): its calls, tokens "
                      "and wall time are those of every process together")  # fmt: skip


def servers(stack: ExitStack, setting: Setting) -> tuple[str, str]:
    """The task and optimizer models of ``setting`` on llama.cpp's server, one thread each."""
    qwen = weights.ensure_file(weights.PINNED["qwen2.5-coder-1.5b"])
    if setting.task_model == SETTINGS["qwen"].task_model:
        task = LlamaCppServer(qwen, model="qwen", n_threads=1, n_ctx=4096, startup_timeout=300)
    else:
        task = LlamaCppServer(n_threads=1, n_ctx=2048)
    small = stack.enter_context(task)
    big = stack.enter_context(LlamaCppServer(qwen, model="qwen", n_threads=1, n_ctx=4096,
                                             startup_timeout=300))  # fmt: skip
    return small.base_url, big.base_url


def subprocess_runner(
    command: list[str], log: Path, *, every: float = PROGRESS_S
) -> subprocess.CompletedProcess[str]:
    """A peer's process, its output (DSPy's and ``gepa``'s own progress lines) written to
    ``log`` as it comes; every ``every`` seconds, a line saying how long it has run and
    the log's last line. The result's ``stderr`` is the log's tail (a crash's traceback)."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                try:
                    proc.wait(timeout=every)
                    break
                except subprocess.TimeoutExpired:
                    minutes = (time.monotonic() - started) / 60
                    print(f"  ... running for {minutes:.0f} min; its last line: "
                          f"{last_line(log)}", flush=True)  # fmt: skip
        except BaseException:  # interrupted: the peer does not outlive its benchmark
            proc.kill()
            proc.wait()
            raise
    return subprocess.CompletedProcess(command, proc.returncode, "", log_tail(log))


def log_tail(log: Path, chars: int = 8000) -> str:
    """The end of a peer's log (a progress bar's redraws, ``\\r``, read as line ends)."""
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - chars))
        return handle.read().decode("utf-8", "replace").replace("\r", "\n")


def last_line(log: Path, width: int = 160) -> str:
    lines = [line.strip() for line in log_tail(log).splitlines() if line.strip()]
    return lines[-1][:width] if lines else "(nothing yet)"


def main(argv: list[str] | None = None, runner: Runner | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="smollm2", choices=sorted(SETTINGS))
    parser.add_argument("--task", default=",".join(TASKS))
    parser.add_argument("--peer", default=",".join(PEERS))
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS)
    parser.add_argument("--val", type=int, default=None, help="default: the setting's")
    parser.add_argument("--test-rows", type=int, default=None, help="default: the setting's")
    parser.add_argument("--venv", type=Path, default=PEERS_DIR / ".venv")
    parser.add_argument("--data", type=Path, default=DATA, help="../shared/data by default")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the peers' data, logs and results here, and reuse a result "
        "saved there by the same code (default: a temporary folder)",
    )
    parser.add_argument("--fresh", action="store_true", help="run every peer again")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    tasks = [t for t in args.task.split(",") if t]
    peers = [p for p in args.peer.split(",") if p]
    unknown = [t for t in tasks if t not in TASKS] + [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown task or peer: {', '.join(unknown)}")
    with ExitStack() as stack:
        if runner is None:  # the real servers and venv
            python = peers_python(args.venv)
            gepa_path = site_packages(python) if "gepa_library" in peers else ""
            urls = servers(stack, setting) if set(peers) & set(DSPY) else ("", "")
        else:
            python, urls, gepa_path = Path(sys.executable), ("http://task", "http://opt"), "gepa"
        if args.workdir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-")))
        else:
            folder = args.workdir.resolve()
        results = run_peers(tasks, peers, setting=setting, python=python, urls=urls,
                            max_calls=args.max_calls, val=args.val,
                            test=args.test_rows or setting.test, folder=folder,
                            runner=runner or subprocess_runner,
                            sources={t: args.data / t for t in tasks}, gepa_path=gepa_path,
                            code=saved_runs.code_fingerprint() if args.workdir else None,
                            fresh=args.fresh)  # fmt: skip
    print_tables(results, setting)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

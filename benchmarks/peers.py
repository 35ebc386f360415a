"""The peers, run as their users run them, on the quality benchmark's tasks and models.

DSPy's ``GEPA`` and ``MIPROv2`` (``benchmarks/peers/run_peer.py``) run in a venv of
their own, ``benchmarks/peers/.venv``, made on first use from
``benchmarks/peers/requirements.txt`` (``dspy==3.4.1``, ``gepa==0.1.4``): never in
promptopt's environment. Both models are served by llama.cpp's OpenAI-compatible
server (promptopt's launcher, one thread each): SmolLM2-135M as the task model,
Qwen2.5-Coder-1.5B as the reflection / prompt model. The splits, the seed instruction
and the labels are ``quality_tasks.py``'s, so the figures sit beside promptopt's in
``benchmarks/quality.py``; each peer gets ``--max-calls`` metric calls (GEPA's
``max_metric_calls``; MIPROv2 runs ``auto="light"`` and its calls are reported).

    python benchmarks/peers.py [--task sst2,trec] [--peer dspy_gepa,dspy_miprov2]
        [--max-calls 731] [--val 100] [--test-rows 300] [--data ../shared/data]

Prints one table per task (best on validation, test accuracy, unparseable test
outputs, task- and optimizer-model calls and tokens, wall time; a crash as a row with
its error) and, last, one JSON line ``{task: {peer: {...}}}``; a crashed peer has
``test_acc`` null and its ``error``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_tasks import MAX_CALLS, TASKS, Task  # noqa: E402

from promptopt.llm import weights  # noqa: E402
from promptopt.testing.llamacpp import LlamaCppServer  # noqa: E402

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
RUNNER = PEERS_DIR / "run_peer.py"
DATA = HERE.parents[1] / "shared" / "data"
PEERS = ("dspy_gepa", "dspy_miprov2")
Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def peers_python(venv: Path) -> Path:
    """The peers' venv's python, made and filled from requirements.txt when it lacks them."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import dspy, gepa"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"making the peers' venv {venv} (dspy, gepa) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                    str(PEERS_DIR / "requirements.txt")], check=True)  # fmt: skip
    return python


def peer_command(
    python: Path, peer: str, task: Task, data: Path, urls: tuple[str, str], max_calls: int,
    out: Path,
) -> list[str]:  # fmt: skip
    return [
        str(python), str(RUNNER), "--peer", peer, "--data", str(data), "--input", task.input,
        "--labels", ",".join(task.labels), "--instruction", task.system,
        "--task-url", urls[0], "--optimizer-url", urls[1], "--max-calls", str(max_calls),
        "--out", str(out),
    ]  # fmt: skip


def run_one(command: list[str], out: Path, runner: Runner) -> dict[str, Any]:
    """One peer's result; a process that died without one is reported as a crash."""
    started = time.perf_counter()
    proc = runner(command)
    if out.exists():
        return dict(json.loads(out.read_text(encoding="utf-8")))
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"error": f"no result: {tail[0]}", "test_acc": None,
            "wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip


def run_peers(
    tasks: Sequence[str], peers: Sequence[str], *, python: Path, urls: tuple[str, str],
    max_calls: int, val: int, test: int, folder: Path, runner: Runner, source: Path = DATA,
) -> dict[str, dict[str, dict[str, Any]]]:  # fmt: skip
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in tasks:
        task = TASKS[name]
        data = folder / name / "data"
        task.write_data(source / name, data, val=val, test=test)
        for peer in peers:
            out = folder / name / f"{peer}.json"
            print(f"{task.title}: {peer} ...", flush=True)
            command = peer_command(python, peer, task, data, urls, max_calls, out)
            results.setdefault(name, {})[peer] = run_one(command, out, runner)
    return results


def print_tables(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    head = (f"{'peer':<14}{'best val':>9}{'test':>7}{'unparse':>8}{'task calls':>11}"
            f"{'opt calls':>10}{'tokens':>9}{'wall s':>8}")  # fmt: skip
    for name, rows in results.items():
        print(f"\n{TASKS[name].title}: SmolLM2 task model, Qwen reflecting (llama.cpp server)")
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
            print(f"  instruction: {' '.join(str(r.get('instruction', '')).split())[:160]}")


def main(argv: list[str] | None = None, runner: Runner | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=",".join(TASKS))
    parser.add_argument("--peer", default=",".join(PEERS))
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test-rows", type=int, default=300)
    parser.add_argument("--venv", type=Path, default=PEERS_DIR / ".venv")
    parser.add_argument("--data", type=Path, default=DATA, help="../shared/data by default")
    args = parser.parse_args(argv)
    tasks = [t for t in args.task.split(",") if t]
    peers = [p for p in args.peer.split(",") if p]
    unknown = [t for t in tasks if t not in TASKS] + [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown task or peer: {', '.join(unknown)}")
    run = runner or (lambda command: subprocess.run(command, capture_output=True, text=True))
    with ExitStack() as stack:
        if runner is None:  # the real servers and venv
            python = peers_python(args.venv)
            qwen = weights.ensure_file(weights.PINNED["qwen2.5-coder-1.5b"])
            small = stack.enter_context(LlamaCppServer(n_threads=1, n_ctx=2048))
            big = stack.enter_context(LlamaCppServer(qwen, model="qwen", n_threads=1,
                                                     n_ctx=4096, startup_timeout=300))  # fmt: skip
            urls = (small.base_url, big.base_url)
        else:
            python, urls = Path(sys.executable), ("http://task", "http://optimizer")
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-")))
        results = run_peers(tasks, peers, python=python, urls=urls, max_calls=args.max_calls,
                            val=args.val, test=args.test_rows, folder=folder, runner=run,
                            source=args.data)  # fmt: skip
    print_tables(results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

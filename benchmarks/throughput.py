"""Throughput of the engine against a loopback OpenAI-compatible server with fixed latency.

Sends the same N chat requests twice per round: once through the raw ``AsyncOpenAI``
client under an ``asyncio.Semaphore(concurrency)``, once as N evaluations through
promptopt's engine (program rendering, the LLM stack with budget and retries,
metric, run store) at the same concurrency. The server runs in its own process.
Rounds alternate raw/engine so both see the same machine noise; the best round of
each is compared.

    python benchmarks/throughput.py [--n 1000] [--concurrency 32] [--latency 0.2] [--rounds 3]

Prints a table and, as its last line, JSON with ratio_to_ideal and ratio_to_raw_client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI

from promptopt.engine import Engine
from promptopt.session import build_parts
from promptopt.store import RunStore
from promptopt.task.loader import load_task
from promptopt.testing._loopback import spawn

TASK = """\
name: throughput
program:
  system: "Classify the sentiment of the review. Answer positive or negative."
  user: "Review: {{text}}"
  max_tokens: 8
data: {{path: rows.jsonl, inputs: [text], target: label, split: {{test: {n}}}}}
metric: {{kind: exact}}
models:
  task: {{model: "openai:loopback", base_url: "{url}", max_concurrency: {c}, timeout: 30}}
optimizer: {{name: exemplars}}
cache: {{policy: "off"}}
concurrency: {c}
output: {out}
"""


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    return spawn(
        [
            sys.executable,
            "-m",
            "promptopt.testing.openai_server",
            "--port",
            "0",
            "--latency",
            str(latency),
        ]
    )


async def raw_client(url: str, requests: list, concurrency: int) -> float:
    client = AsyncOpenAI(base_url=url, api_key="loopback", max_retries=0, timeout=30)
    gate = asyncio.Semaphore(concurrency)

    async def one(request) -> str:
        async with gate:
            reply = await client.chat.completions.create(
                model="loopback",
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
            )
            return reply.choices[0].message.content or ""

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(r) for r in requests))
    elapsed = time.perf_counter() - started
    assert len(answers) == len(requests)
    await client.close()
    return elapsed


async def engine_run(task_path: Path, out: Path) -> tuple[float, int]:
    spec = load_task(task_path)
    store = RunStore.create(out, task=spec.model_dump(mode="json"))
    parts = build_parts(spec, store=store)
    engine = Engine(
        program=parts.program,
        metric=parts.metric,
        splits=parts.splits,
        task_llm=parts.task_llm,
        optimizer_llm=parts.optimizer_llm,
        store=store,
        concurrency=spec.concurrency,
    )
    started = time.perf_counter()
    evaluated = await engine.evaluate(
        parts.program.seed_params(), parts.splits.test, split="test", origin="benchmark"
    )
    elapsed = time.perf_counter() - started
    calls = parts.task_llm.stats.calls
    await parts.aclose()
    store.close()
    assert evaluated.errors == 0, "the engine saw errors"
    return elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ideal = args.n / args.concurrency * args.latency
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            rows = [
                {
                    "text": f"review number {i}: it was {'good' if i % 2 else 'bad'}",
                    "label": "positive" if i % 2 else "negative",
                }
                for i in range(args.n)
            ]
            (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            task_path = folder / "task.yaml"
            task_path.write_text(
                TASK.format(
                    n=args.n, url=url, c=args.concurrency, out=json.dumps(str(folder / "traces"))
                )
            )
            spec = load_task(task_path)
            parts_program = build_parts(
                spec, store=RunStore.create(folder / "probe", task={"name": "probe"})
            )
            requests = [
                parts_program.program.request(parts_program.program.seed_params(), e.inputs)
                for e in parts_program.splits.test
            ]
            raw_times, engine_times = [], []
            for _ in range(args.rounds):
                raw_times.append(asyncio.run(raw_client(url, requests, args.concurrency)))
                elapsed, calls = asyncio.run(engine_run(task_path, folder / "traces"))
                assert calls == args.n, f"engine made {calls} calls, expected {args.n}"
                engine_times.append(elapsed)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    raw, eng = min(raw_times), min(engine_times)
    print(
        f"{args.n} requests, concurrency {args.concurrency}, server latency "
        f"{args.latency * 1000:.0f} ms, ideal {ideal:.2f} s, best of {args.rounds} rounds"
    )
    print(f"{'client':<28}{'wall s':>10}{'x ideal':>10}{'x raw':>10}")
    print(f"{'raw AsyncOpenAI':<28}{raw:>10.2f}{raw / ideal:>10.3f}{1.0:>10.3f}")
    print(f"{'promptopt engine':<28}{eng:>10.2f}{eng / ideal:>10.3f}{eng / raw:>10.3f}")
    print(
        json.dumps(
            {
                "n": args.n,
                "concurrency": args.concurrency,
                "latency_s": args.latency,
                "ideal_s": round(ideal, 3),
                "raw_client_s": round(raw, 3),
                "engine_s": round(eng, 3),
                "ratio_to_ideal": round(eng / ideal, 3),
                "raw_ratio_to_ideal": round(raw / ideal, 3),
                "ratio_to_raw_client": round(eng / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    main()

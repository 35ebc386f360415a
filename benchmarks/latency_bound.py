"""Latency-bound runs: is each optimizer's wall time its critical path, and no more?

Every registered optimizer runs a small task against a loopback OpenAI-compatible
server (its own process) that waits a fixed latency before every answer, with
concurrency to spare everywhere. The task model, the optimizer model and the
judge are three model names on that server, answered by a deterministic fake
(:func:`fake_reply`) that gives each optimizer replies it can parse: a label
for a task call, "A" or "B" for a judge vote, a JSON object in the shape of the
request's schema, a text between ``<START>`` and ``<END>`` or plain feedback.

The critical path is read from the run store: each recorded (not replayed) call
is the interval from its start, queueing for a slot included, to its end; the
rounds are the fewest instants at which every call is in flight at one of them
(equal to the longest chain of calls each starting after the previous ended),
and the critical path is rounds x latency. A run whose wall time is near its
critical path spends its time waiting on the model, not between rounds; a
concurrency cap shows as a ratio above 1 (a queued call starts a round it
cannot finish in one latency). Requests an optimizer sends one after another
when they could go together show as extra rounds: ``--waves`` lists each round
with its calls by tag, to check that a round holds what could run at once.
A first, unmeasured run pays the process's one-time costs (importing the SDKs).

The wall time of a run is all of ``optimize(task file)``: reading the task file, the
pre-flight probe of the server, creating the run folder and store, building the
models, the search, scoring the seed and the best on the test split, writing the
result files and closing the store; only reading the store afterwards is left out.
Each optimizer's config (:data:`CONFIGS`) gives a run of 13 or more rounds, with
rounds as large as its usual config sends together, so that what a run pays once
is no bigger a share of it than in a real run of many rounds.

    python benchmarks/latency_bound.py [--optimizer NAME ...] [--latency 0.2] [--concurrency 64] [--waves]

Prints a table (optimizer, calls, rounds, critical path s, wall s, ratio) and, as
its last line, JSON with ``max_ratio`` and the ratio of each optimizer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptopt.api import optimize
from promptopt.optimizers import registry
from promptopt.store import RunStore
from promptopt.testing._loopback import run_cli, spawn
from promptopt.testing.openai_server import OpenAITestServer

LABELS = ("positive", "negative")

# Per optimizer: a config for a run of 13 or more rounds (a few seconds at 200 ms a round),
# so that what a run pays once (opening its store, its first request to each model, writing
# its result) is a small share of it, as in a real run of many rounds. The size of each
# round (the calls an optimizer sends together) is what its usual config gives; exemplars
# draws sets of 2 so that 12 training examples make enough distinct sets.
CONFIGS: dict[str, dict[str, Any]] = {
    "exemplars": {"k": 2, "num_sets": 28, "mutations": 16, "per_step": 4},
    "optoprime": {"steps": 6},
    "mcts": {"iterations": 4, "expand_width": 2, "depth_limit": 3, "batch_size": 2},
    "opro": {"steps": 6, "per_step": 4},
    "spo": {"rounds": 4},
    "promst": {"n_children": 3, "expansions": 4, "surplus": 2, "predictor_min_pairs": 4},
}

TASK = """\
name: latency-{optimizer}
description: Is a short product review positive or negative?
seed: 0
program:
  system: "Is this product review positive or negative? Reply with one word."
  user: "{{text}}"
  trainable: [system, exemplars]
  max_tokens: 8
data: {{path: rows.jsonl, inputs: [text], target: label, split: {{train: 12, val: 8, test: 8}}}}
metric: {{kind: exact, normalize: true}}
models:
  task: {{model: "openai:task", base_url: "{url}", max_concurrency: {c}, timeout: 30}}
  optimizer: {{model: "openai:optimizer", base_url: "{url}", max_concurrency: {c}, timeout: 30}}
  judge: {{model: "openai:judge", base_url: "{url}", max_concurrency: {c}, timeout: 30}}
optimizer: {{name: {optimizer}, config: {config}}}
budget: {{max_calls: 600}}
cache: {{policy: "off"}}
concurrency: {c}
output: {out}
"""


# -- the fake models, served by the loopback server ----------------------------------------


def fake_reply(body: dict[str, Any]) -> str:
    """A deterministic answer of the shape the request asks for (see the module doc)."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()
    draw = int(digest[:8], 16)
    model = body.get("model", "")
    if model == "task":
        return LABELS[draw % 2]
    if model == "judge":
        return "AB"[draw % 2]
    text = f"Read the review, then answer positive or negative (revision {digest[:8]})."
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
    if schema:
        return json.dumps(_filled(schema, text))
    asked = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    if "<START>" in asked:
        return f"<START>{text}<END>"
    return "The text does not say which words to answer with; name both labels."


def _filled(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """A reply object for ``schema``: every string property holds ``text``; a
    ``suggestion`` object suggests a new value for each text variable."""
    out: dict[str, Any] = {}
    for key, shape in schema.get("properties", {}).items():
        if shape.get("type") == "string":
            out[key] = text
        elif shape.get("type") == "object":
            out[key] = {
                name: text
                for name, inner in shape.get("properties", {}).items()
                if inner.get("type") == "string"
            }
    return out


def serve(argv: Sequence[str]) -> None:
    run_cli(OpenAITestServer, argv, handler=fake_reply)


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    return spawn([sys.executable, __file__, "--serve", "--port", "0", "--latency", str(latency)])


# -- measuring ---------------------------------------------------------------------------


def waves(calls: Sequence[dict[str, Any]], *, slack: float) -> list[list[dict[str, Any]]]:
    """The calls grouped in rounds: the fewest instants that each call is in flight at
    (greedy by end time); ``slack`` seconds of clock noise are forgiven."""
    out: list[list[dict[str, Any]]] = []
    point = None
    for call in sorted(calls, key=lambda c: c["started_at"] + c["duration_s"]):
        if point is None or call["started_at"] > point - slack:
            point = call["started_at"] + call["duration_s"]
            out.append([])
        out[-1].append(call)
    return out


def run_one(name: str, *, url: str, concurrency: int, latency: float, folder: Path) -> dict:
    task_path = folder / f"{name}.yaml"
    task_path.write_text(
        TASK.format(
            optimizer=name,
            url=url,
            c=concurrency,
            config=json.dumps(CONFIGS.get(name, {})),
            out=json.dumps(str(folder / "traces")),
        )
    )
    started, started_at = time.perf_counter(), time.time()
    result = optimize(task_path)
    wall = time.perf_counter() - started
    with RunStore.open(result.run_dir) as store:
        calls = [c for c in store.llm_calls() if not c["cached"] and c["response"] is not None]
    rounds = waves(calls, slack=latency / 100)
    critical = len(rounds) * latency
    return {
        "optimizer": name,
        "calls": len(calls),
        "rounds": len(rounds),
        "critical_s": round(critical, 3),
        "wall_s": round(wall, 3),
        "ratio": round(wall / critical, 3) if critical else None,
        "stopped": result.stopped,
        "noops": result.optimizer_stats.get("noops"),
        "waves": [  # each round: from its first start to its last end (s into the run), tags
            (
                min(c["started_at"] for c in wave) - started_at,
                max(c["started_at"] + c["duration_s"] for c in wave) - started_at,
                dict(Counter(c["tag"] or "task" for c in wave)),
            )
            for wave in rounds
        ],
    }


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", action="append", choices=registry.available(),
                        help="run only this optimizer (repeatable; default: every one)")  # fmt: skip
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--waves", action="store_true", help="list each run's rounds")
    args = parser.parse_args()
    names = args.optimizer or registry.available()
    proc, url = start_server(args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            examples = [
                {"text": f"review {i}: it was {'good' if i % 2 else 'bad'}", "label": LABELS[i % 2]}
                for i in range(28)
            ]
            (folder / "rows.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
            # unmeasured: the process's one-time costs (importing the SDK: seconds here)
            run_one(names[0], url=url, concurrency=args.concurrency, latency=args.latency,
                    folder=folder)  # fmt: skip
            for name in names:
                rows.append(
                    run_one(name, url=url, concurrency=args.concurrency, latency=args.latency,
                            folder=folder)
                )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"server latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}")
    print(f"{'optimizer':<12}{'calls':>7}{'rounds':>8}{'critical s':>12}{'wall s':>9}{'ratio':>8}")
    for row in rows:
        print(
            f"{row['optimizer']:<12}{row['calls']:>7}{row['rounds']:>8}"
            f"{row['critical_s']:>12.2f}{row['wall_s']:>9.2f}{row['ratio']:>8.3f}"
        )
        if args.waves:
            for number, (start, end, tags) in enumerate(row["waves"], 1):
                said = ", ".join(f"{n} {t}" for t, n in tags.items())
                print(f"    round {number:>3} {start:7.3f}-{end:7.3f} s: {said}")
    ratios = {row["optimizer"]: row["ratio"] for row in rows}
    print(
        json.dumps(
            {
                "latency_s": args.latency,
                "concurrency": args.concurrency,
                "max_ratio": max(ratios.values()),
                "ratios": ratios,
                "rounds": {row["optimizer"]: row["rounds"] for row in rows},
                "calls": {row["optimizer"]: row["calls"] for row in rows},
                "noops": {row["optimizer"]: row["noops"] for row in rows},
            }
        )
    )


if __name__ == "__main__":
    main()

"""PROMST's score predictor, on vs off, under the same call budget, with simulated models.

Run: ``python benchmarks/promst_predictor.py [--runs 10] [--max-calls 300]``.

A first figure, not the real measurement (that needs a real optimizer model): the
models are fakes whose behaviour is known, so what the predictor can learn is known too.

- The task model answers an example right when the prompt's *quality* exceeds the
  example's difficulty (a fixed number in [0, 1) per example). Quality is 0.1 plus
  0.2 for each helpful sentence in the prompt, minus 0.15 for each harmful one
  (neutral sentences count 0).
- The optimizer model's summaries are canned; each rewrite appends one sentence
  drawn from the 12 (4 helpful, 4 harmful, 4 neutral), or drops one, at random,
  seeded by the request's seed and the run's salt.

Each of ``runs`` salts runs PROMST twice on the same data under ``max_calls``
(every model call counts: summaries, rewrites and evaluations): predictor on
(``surplus: 4`` extra rewrites ranked per expansion once it has 6 pairs) and off.
Reported per arm: mean best validation and test score, evaluations (validation
examples run, the search's task-model calls), optimizer calls, candidates
evaluated, the evaluations spent until the best candidate was first scored, and
the predictor's mean absolute error. The last line printed
is JSON with those means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest
from promptopt.store import RunStore

HELPFUL = ("Read every word.", "Check the key fact.", "Weigh both readings.", "Name the evidence.")
HARMFUL = ("Answer fast.", "Guess if unsure.", "Skip the details.", "Trust your first idea.")
NEUTRAL = ("Be polite.", "Stay calm.", "Use short sentences.", "Write clearly.")
SENTENCES = HELPFUL + HARMFUL + NEUTRAL
ROWS = 60

TASK = """\
name: predictor-bench
program:
  system: "Decide whether the claim holds."
  user: "{{text}}"
  trainable: [system]
  choices: ["true", "false"]
data:
  path: rows.jsonl
  inputs: [text]
  target: label
  split: {{train: 0, val: 20, test: 40, seed: 0}}
metric: {{kind: exact}}
models: {{task: "fake:bench"}}
optimizer:
  name: promst
  config: {{n_children: 2, n_selected: 2, expansions: 40, max_level: 12, predictor: {predictor},
           surplus: 4, predictor_min_pairs: 6}}
budget: {{max_calls: {max_calls}}}
cache: {{policy: "off"}}
concurrency: 8
output: {output}
"""


def _rows() -> list[dict[str, Any]]:
    rng = random.Random(0)
    return [
        {"text": f"claim {i}", "label": rng.choice(["true", "false"]), "difficulty": rng.random()}
        for i in range(ROWS)
    ]


def quality(prompt: str) -> float:
    helpful = sum(s in prompt for s in HELPFUL)
    harmful = sum(s in prompt for s in HARMFUL)
    return 0.1 + 0.2 * helpful - 0.15 * harmful


def task_model(rows: dict[str, dict[str, Any]]):
    def answer(request: LLMRequest) -> str:
        row = rows[request.messages[-1].content]
        right = quality(request.messages[0].content) > row["difficulty"]
        return row["label"] if right else ("false" if row["label"] == "true" else "true")

    return answer


def optimizer_model(salt: int):
    def answer(request: LLMRequest) -> str:
        text = request.messages[-1].content
        if request.messages[0].content.startswith("You review the failures"):
            return "The prompt does not say how to check a claim."
        current = text.split("#Prompt\n", 1)[1].split("\n\n#Errors", 1)[0]
        rng = random.Random(f"{salt}:{request.seed}:{current}")
        extra = [s for s in SENTENCES if s in current]
        if extra and rng.random() < 0.3:
            new = current.replace(" " + rng.choice(extra), "", 1)
        else:
            new = f"{current} {rng.choice([s for s in SENTENCES if s not in current])}"
        return json.dumps({"reasoning": "r", "prompt": new})

    return answer


async def one_run(folder: Path, *, salt: int, predictor: bool, max_calls: int) -> dict[str, Any]:
    rows = _rows()
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "task.yaml"
    path.write_text(TASK.format(predictor=str(predictor).lower(), max_calls=max_calls,
                                output=json.dumps(str(folder / "traces"))))  # fmt: skip
    by_text = {r["text"]: r for r in rows}
    result = await aoptimize(path, backends={"task": FakeBackend(task_model(by_text)),
                                             "optimizer": FakeBackend(optimizer_model(salt))})  # fmt: skip
    with RunStore.open(result.run_dir) as store:
        val = store.evaluations(split="val")
        calls = store.llm_calls()
    order = list(dict.fromkeys(e["candidate_id"] for e in val))
    until_best = (order.index(result.best.id) + 1) * 20
    return {
        "best_val": result.scores["best_val"],
        "best_test": result.scores["best_test"],
        "evaluations": len(val),  # validation examples run: task-model calls of the search
        "optimizer_calls": sum(1 for c in calls if c["tag"] == "optimizer"),
        "candidates": len(order),
        "evaluations_until_best": until_best,
        "predictor_mae": result.optimizer_stats.get("predictor_mae"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-calls", type=int, default=300)
    args = parser.parse_args()
    arms: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for salt in range(args.runs):
            for arm in arms:
                folder = Path(tmp) / f"{arm}{salt}"
                folder.mkdir()
                arms[arm].append(await one_run(folder, salt=salt, predictor=arm == "on",
                                               max_calls=args.max_calls))  # fmt: skip
    means = {}
    keys = ("best_val", "best_test", "evaluations", "optimizer_calls", "candidates",
            "evaluations_until_best", "predictor_mae")  # fmt: skip
    print(f"{'predictor':<10}" + "".join(f"{k:>24}" for k in keys))
    for arm, runs in arms.items():
        means[arm] = {
            k: round(statistics.mean(r[k] for r in runs if r[k] is not None), 4)
            if any(r[k] is not None for r in runs) else None
            for k in keys
        }  # fmt: skip
        print(f"{arm:<10}" + "".join(f"{str(means[arm][k]):>24}" for k in keys))
    wins = sum(
        a["best_test"] > b["best_test"] for a, b in zip(arms["on"], arms["off"], strict=True)
    )
    ties = sum(
        a["best_test"] == b["best_test"] for a, b in zip(arms["on"], arms["off"], strict=True)
    )
    print(f"best test: predictor on better in {wins} of {args.runs} runs, equal in {ties}")
    print(json.dumps({"runs": args.runs, "max_calls": args.max_calls, "on": means["on"],
                      "off": means["off"], "on_better_test": wins, "equal_test": ties}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())

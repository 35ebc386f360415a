"""Measure the triage workflow (tasks/triage/workflow.py) on SmolLM2 before optimizing it.

Calls the workflow's nodes directly over ``local:smollm2`` (no engine, no budget;
a response cache in a temporary folder, so each message's topic is asked once)
and prints, on the validation and test splits of ``tasks/triage/task.yaml``:

- the topic step alone (its word mapped to a team);
- the seed (no exemplars), with and without the topic hint;
- several random exemplar sets (one message per team, drawn from the training
  split), and the test accuracy of the set that is best on validation;

each with and without the keyword rules of ``route``, so one sees what every
step adds. Example::

    python3 scripts/probe_triage.py --sets 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# llama.cpp's OpenMP threads spin while they wait; passive waiting must be set before loading.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tasks" / "triage"))

import workflow  # noqa: E402

from promptopt.llm.cache import ResponseCache  # noqa: E402
from promptopt.llm.models import make_llm  # noqa: E402
from promptopt.task import Example, load_splits, load_task  # noqa: E402

Exemplar = dict[str, Any]
TOPIC_TEAM = dict(zip(workflow.TOPICS, workflow.TEAMS, strict=True))


async def answers(
    examples: Sequence[Example], *, llm: Any, shots: list[Exemplar], hint: bool
) -> list[tuple[str, str]]:
    """(topic, classify step's team) for each example; topics come from the cache after the first."""
    answers = []
    for example in examples:
        message = example.inputs["message"]
        about = await workflow.topic(message, llm)
        shown = about if hint else ""
        team = await workflow.classify(message, shown, workflow.instruction.value, shots, llm)
        answers.append((about, team))
    return answers


def accuracy(
    examples: Sequence[Example], answers: Sequence[tuple[str, str]], *, rules: bool
) -> float:
    final = [
        workflow.route(team, about, ex.inputs["message"]) if rules else team
        for (about, team), ex in zip(answers, examples, strict=True)
    ]
    return sum(f == ex.target for f, ex in zip(final, examples, strict=True)) / len(examples)


def draw(train: Sequence[Example], *, rng: random.Random) -> list[Exemplar]:
    """One training message per team, in a random order."""
    shots = []
    for team in workflow.TEAMS:
        pick = rng.choice([ex for ex in train if ex.target == team])
        shots.append({"inputs": dict(pick.inputs), "output": pick.target})
    rng.shuffle(shots)
    return shots


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=str(ROOT / "tasks" / "triage" / "task.yaml"))
    parser.add_argument("--sets", type=int, default=4, help="random exemplar sets to try")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    splits = load_splits(load_task(args.task))
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as cache_dir:
        llm = make_llm("local:smollm2", cache=ResponseCache(cache_dir))
        started = time.perf_counter()

        async def report(
            label: str, shots: list[Exemplar], *, hint: bool = True
        ) -> tuple[float, float]:
            val = await answers(splits.val, llm=llm, shots=shots, hint=hint)
            test = await answers(splits.test, llm=llm, shots=shots, hint=hint)
            spread = dict(Counter(team for _, team in test))
            print(
                f"{label:<28} val {accuracy(splits.val, val, rules=False):.2f}"
                f" / rules {accuracy(splits.val, val, rules=True):.2f}"
                f"   test {accuracy(splits.test, test, rules=False):.2f}"
                f" / rules {accuracy(splits.test, test, rules=True):.2f}"
                f"   test answers {spread}   {time.perf_counter() - started:.0f}s",
                flush=True,
            )
            return accuracy(splits.val, val, rules=True), accuracy(splits.test, test, rules=True)

        for name, split in (("val", splits.val), ("test", splits.test)):
            topics = [await workflow.topic(ex.inputs["message"], llm) for ex in split]
            mapped = [TOPIC_TEAM[about] for about in topics]
            right = sum(team == ex.target for team, ex in zip(mapped, split, strict=True))
            print(f"topic step alone, {name}: {right / len(split):.2f}  {dict(Counter(mapped))}")
        await report("seed, no topic hint", [], hint=False)
        await report("seed", [])
        best: tuple[float, float] = (-1.0, 0.0)
        for i in range(args.sets):
            shots = draw(splits.train, rng=rng)
            scores = await report(f"exemplar set {i + 1}", shots)
            best = max(best, scores)
        print(f"best set on val: val {best[0]:.2f}, test {best[1]:.2f}")
        print(f"model calls {llm.stats.snapshot()}")
        await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())

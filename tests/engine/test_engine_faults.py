"""Whole optimization runs over the real openai SDK against a loopback server that injects faults.

A run against a server that answers 429 (with Retry-After), 500, hangs past the
client's timeout and drops connections must end exactly as a run against a clean
server; and a budget must cap what the server answers, at concurrency 16.
"""

from __future__ import annotations

import json
from pathlib import Path

from fake_sentiment import picky_wire, sentiment_rows

from promptopt.api import aoptimize
from promptopt.testing.faults import FaultPlan
from promptopt.testing.openai_server import OpenAITestServer

# A hung request ends when the client gives up on it (the server cancels it on disconnect).
FAULTS = FaultPlan({"429": 0.15, "500": 0.1, "timeout": 0.03, "drop": 0.08}, seed=5,
                   retry_after=0.05, hang_s=60.0, max_per_request=2)  # fmt: skip
# A request that times out although the server answered it (a loaded machine) is answered
# twice. That changes no result, only the server's count: a server that counts gets a timeout
# with a wide margin (requests took up to 2 s here under load), one that never hangs none.
CLIENT_TIMEOUT = 1.5
COUNTED_TIMEOUT = 4.0
NO_HANGS_TIMEOUT = 60.0

TASK = """\
name: faulty-sentiment
seed: 1
program:
  system: "Classify the sentiment."
  user: "Review: {{text}}"
  trainable: [exemplars]
  max_tokens: 3
data: {{path: rows.jsonl, inputs: [text], target: label, split: {{train: 16, val: 24, test: 24}}}}
metric: {{kind: exact}}
models:
  task: {{model: "openai:loopback", base_url: "{url}", max_concurrency: 16, timeout: {timeout}}}
optimizer: {{name: exemplars, config: {{k: 2, num_sets: 3, mutations: 1, per_step: 2}}}}
budget: {{max_calls: {max_calls}}}
concurrency: 16
cache: {{policy: "off"}}
output: {out}
"""


def write_task(folder: Path, url: str, *, max_calls: int, timeout: float = CLIENT_TIMEOUT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(64)))
    path = folder / "task.yaml"
    path.write_text(
        TASK.format(
            url=url, max_calls=max_calls, timeout=timeout, out=json.dumps(str(folder / "traces"))
        )
    )
    return path


async def test_a_faulty_server_changes_nothing_in_the_result(tmp_path):
    async with (
        OpenAITestServer(handler=picky_wire) as clean,
        OpenAITestServer(handler=picky_wire, faults=FAULTS) as faulty,
    ):
        clean_task = write_task(
            tmp_path / "clean", clean.base_url, max_calls=500, timeout=NO_HANGS_TIMEOUT
        )
        expected = await aoptimize(clean_task)
        got = await aoptimize(write_task(tmp_path / "faulty", faulty.base_url, max_calls=500))
    assert faulty.stats.faulted_total > 10  # the faults really happened
    assert got.best.params == expected.best.params
    assert got.scores == expected.scores
    searched = clean.stats.answered - expected.test_usage["calls"]
    assert got.usage["calls"] == expected.usage["calls"] == searched
    assert got.scores["best_test"] > got.scores["seed_test"]


async def test_the_budget_caps_what_a_faulty_server_answers_at_concurrency_16(tmp_path):
    async with OpenAITestServer(handler=picky_wire, faults=FAULTS, latency=0.02) as server:
        task = write_task(tmp_path, server.base_url, max_calls=60, timeout=COUNTED_TIMEOUT)
        result = await aoptimize(task)
        answered_in_search = server.stats.answered - result.test_usage["calls"]
    assert result.usage["calls"] <= 60
    assert answered_in_search <= 60
    # the budget either stopped a step (retries spend calls) or left too few for another
    assert result.stopped.startswith("budget") or result.stages[-1]["ended_early"]

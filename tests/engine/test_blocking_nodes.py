"""A plain trainable node inside an async workflow never blocks the engine's loop (issue 9).

The engine evaluates examples concurrently on one loop; each example's async
workflow calls a plain ``def`` trainable node whose proposed code runs in the
sandbox, which blocks. Each example runs on a loop of its own, so four such
calls are in flight at once and four timeouts cost about one.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from promptopt.errors import ProposedCodeError
from promptopt.graph import Trace, record_llm_call
from promptopt.llm.fakes import fake_llm
from promptopt.sandbox import Sandbox
from promptopt.task.data import Example
from promptopt.task.program import PythonProgram

WORKFLOW = '''
from promptopt import node


@node
async def classify(message, llm):
    """Ask the model for a team."""
    return await llm.achat(message, choices=("billing", "technical"), max_tokens=4)


@node(trainable=True)
def route(team, message):
    """Keyword rules that override the model."""
    return team


async def run(inputs, llm):
    team = await classify(inputs["message"], llm)
    return route(team, inputs["message"])
'''

LOOPS_FOREVER = "def route(team, message):\n    while True:\n        pass\n"
TIMEOUT_S = 2.0


class CountingSandbox:
    """A sandbox that counts its calls in flight, and the most at once."""

    def __init__(self, inner: Sandbox) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.calls = self.in_flight = self.most = 0

    def run(self, *args: Any) -> Any:
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            return self.inner.run(*args)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def program(tmp_path: Path) -> PythonProgram:
    (tmp_path / "workflow.py").write_text(WORKFLOW)
    return PythonProgram(entry="workflow:run", base_dir=tmp_path)


async def test_four_timing_out_sync_nodes_in_an_async_workflow_block_at_once_not_in_turn(
    program,
):
    box = CountingSandbox(Sandbox(timeout_s=TIMEOUT_S))
    llm = fake_llm(lambda request: "billing")
    llm.add_listener(record_llm_call)
    params = {**program.seed_params(), "route.code": LOOPS_FOREVER}
    examples = [Example(str(n), {"message": f"message {n}"}) for n in range(4)]
    seen_by_loop: set[int] = set()  # calls in flight, as the engine's loop saw them

    async def score_one(example: Example) -> tuple[Trace, BaseException | None]:
        """What the engine does per example: a trace with the candidate's values, then run."""
        run = Trace(name="route", values=params, sandbox=box, meta={"example": example.id})
        try:
            with run:
                await program.run(params, example, llm=llm)
        except ProposedCodeError as exc:
            return run, exc
        return run, None

    async def watch() -> None:
        while True:
            seen_by_loop.add(box.in_flight)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    outcomes = await asyncio.gather(*(score_one(e) for e in examples))
    watcher.cancel()

    assert box.calls == 4 and box.most == 4
    # all four blocked at once, and the engine's loop kept running meanwhile (no wall-clock
    # bound: a loaded machine stretches any duration)
    assert 4 in seen_by_loop
    for example, (run, error) in zip(examples, outcomes, strict=True):
        assert isinstance(error, ProposedCodeError) and error.kind == "timeout"
        assert run.meta["example"] == example.id
        nodes = {n.name: n for n in run.nodes}
        assert set(nodes) == {"classify", "route", "route.code"}  # this example's nodes only
        (call,) = nodes["classify"].llm_calls  # the call made on the engine's loop landed here
        assert call["messages"][-1]["content"] == example.inputs["message"]
        assert nodes["route"].error.startswith("ProposedCodeError")

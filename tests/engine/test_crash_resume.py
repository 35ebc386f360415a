"""Real ``promptopt optimize`` processes, SIGKILLed and resumed, or two at once on one run.

The task model is the loopback OpenAI-compatible server in this process: it answers
as the picky fake, counts every answer it gives (what a provider would bill), and
kills the client process with SIGKILL after a chosen number of answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

from budgeted_run import MAX_CALLS, only_run, outcome, row_counts, start_cli, write_task
from fake_sentiment import picky_wire

from promptopt.api import aoptimize
from promptopt.store import RunStore
from promptopt.testing.openai_server import OpenAITestServer

CONCURRENCY = 4


def _model(url: str, **options: object) -> str:
    model = {"model": "openai:loopback", "base_url": url, "max_concurrency": CONCURRENCY}
    return json.dumps(model | options)


class Killer:
    """The server's handler: answers as the picky fake; SIGKILLs ``pid`` after ``after`` answers."""

    def __init__(self) -> None:
        self.answered = 0  # every answer given, to any process: what a provider bills
        self.pid: int | None = None
        self._left: int | None = None
        self._lock = threading.Lock()

    def arm(self, after: int) -> None:
        with self._lock:
            self._left, self.pid = after, None

    def __call__(self, body: dict) -> str:
        with self._lock:
            if self._left == 0 and self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)  # this request is never answered
                self._left = None
                return ""
            if self._left:
                self._left -= 1
            self.answered += 1
        return picky_wire(body)


def test_a_budgeted_run_killed_three_times_stays_in_budget_and_ends_as_uninterrupted(tmp_path):
    killer = Killer()
    with OpenAITestServer(handler=killer) as server:
        model = _model(server.base_url)
        reference = asyncio.run(aoptimize(write_task(tmp_path / "reference", model)))
        expected = outcome(reference.run_dir)
        billed_uninterrupted = killer.answered

        path = write_task(tmp_path / "crashed", model)
        run_dir: Path | None = None
        # killed while scoring the seed; in step 1, the resumed process then reaching the
        # budget's edge; and while scoring the test split
        kills = (5, 40, 40)
        for after in kills:
            killer.arm(after)
            proc = start_cli(str(path), *(() if run_dir is None else ("--resume", str(run_dir))))
            killer.pid = proc.pid
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == -signal.SIGKILL, err
            run_dir = run_dir or only_run(tmp_path / "crashed" / "traces")
            with RunStore.open(run_dir) as store:
                spent_before_resume = store.budget_spent()["calls"]
            assert spent_before_resume <= MAX_CALLS
        assert run_dir is not None
        killer.arm(10**9)  # the last resume runs to the end
        proc = start_cli(str(path), "--resume", str(run_dir))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        billed = killer.answered - billed_uninterrupted

    got = outcome(run_dir)
    assert got["paid"] <= MAX_CALLS
    assert got["paid"] == expected["paid"]  # the budget ran out at the same place
    assert got == expected  # best candidate, scores, one decision per step, paid calls
    # the progress shows the run's true spending, carried over from the killed processes
    assert f"({spent_before_resume}/{MAX_CALLS} calls of its budget already spent)" in err
    shown = [int(n) for n in re.findall(rf"(\d+)/{MAX_CALLS} calls", err)]
    assert shown and all(spent_before_resume <= n <= MAX_CALLS for n in shown)
    # what the provider billed beyond the store: calls answered while their process died,
    # at most the calls in flight at each kill (the documented limit of resuming)
    with RunStore.open(run_dir) as store:
        recorded = sum(1 for c in store.llm_calls() if not c["cached"] and c["response"])
    assert 0 <= billed - recorded <= CONCURRENCY * len(kills)


def test_a_second_process_on_a_live_run_is_refused_and_changes_nothing(tmp_path):
    gate = threading.Event()

    async def held(body: dict) -> str:  # the first process waits on its first answers
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return picky_wire(body)

    with OpenAITestServer(handler=held) as server:
        path = write_task(tmp_path, _model(server.base_url, timeout=600))  # held, not retried
        first = start_cli(str(path))
        try:
            # all its requests in flight, held: it can neither send nor record more
            _wait_for(lambda: server.stats.received >= CONCURRENCY or first.poll() is not None)
            assert first.poll() is None, first.communicate()[1]
            run_dir = only_run(tmp_path / "traces")
            before, received = row_counts(run_dir), server.stats.received
            second = start_cli(str(path), "--resume", run_dir.name, "--output", str(run_dir.parent))
            out, err = second.communicate(timeout=120)
            assert second.returncode == 2
            assert err.splitlines() == [
                f"promptopt: error: run {run_dir.name!r} is in use by another process "
                f"(pid {first.pid}); wait for it to end, or stop it, before resuming"
            ]
            assert out == ""
            assert row_counts(run_dir) == before
            assert server.stats.received == received  # it sent nothing
        finally:
            gate.set()
            _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    with RunStore.open(run_dir) as store:
        assert store.status() == "finished"
        steps = [d["step"] for d in store.decisions()]
        paid = [c["key"] for c in store.llm_calls() if not c["cached"] and c["response"]]
    assert steps and len(steps) == len(set(steps))  # each step decided once
    assert len(paid) == len(set(paid))  # no request paid twice


def _wait_for(condition, *, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)

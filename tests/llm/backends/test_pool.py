"""The local backend's context pool: which worker takes which request, and when."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from promptopt.llm.backends._pool import PATIENCE, ContextPool, _Job

bound = threading.local()


def bind(context: str) -> None:
    bound.context = context


def where() -> str:
    return str(bound.context)


@pytest.fixture
def pool() -> Iterator[ContextPool[str]]:
    made = ContextPool(["x", "y"], name="test-pool", bind=bind)
    yield made
    made.shutdown()


def queued(pool: ContextPool[str], *keys: str) -> None:
    pool._queue = [_Job(key, lambda: None) for key in keys]


def taken(pool: ContextPool[str], worker: int) -> str:
    job = pool._take(worker)
    assert job is not None
    return str(job.key)


def test_a_worker_takes_its_own_conversation_then_an_unclaimed_one_then_the_oldest(
    pool: ContextPool[str],
) -> None:
    pool._served = ["a", "b"]
    queued(pool, "b", "c", "a", "b", "a")
    assert taken(pool, 0) == "a"  # its own, though two requests are older
    assert taken(pool, 1) == "b"
    assert taken(pool, 0) == "a"
    assert taken(pool, 0) == "c"  # none of its own left: "c" is nobody's
    assert pool._served == ["c", "b"]
    assert taken(pool, 1) == "b"
    assert pool._take(1) is None
    queued(pool, "b", "b")
    assert taken(pool, 0) == "b"  # only the other worker's conversation waits: the oldest


def test_the_oldest_request_is_passed_over_at_most_patience_times(
    pool: ContextPool[str],
) -> None:
    pool._served = ["a", "b"]
    queued(pool, "b", *["a"] * (PATIENCE + 1))
    assert [taken(pool, 0) for _ in range(PATIENCE)] == ["a"] * PATIENCE
    assert taken(pool, 0) == "b"  # the stream of "a" held it back long enough
    assert taken(pool, 0) == "a"


def test_a_cancelled_request_is_dropped_without_running(pool: ContextPool[str]) -> None:
    pool._served = ["a", "b"]
    queued(pool, "a", "c")
    pool._queue[0].future.cancel()
    assert taken(pool, 0) == "c"
    assert pool._queue == []


def test_requests_run_on_the_workers_and_errors_reach_their_callers(
    pool: ContextPool[str],
) -> None:
    def fail() -> None:
        raise ValueError("bad request")

    bad = pool.submit("a", fail)
    good = [pool.submit("a", where) for _ in range(20)]
    with pytest.raises(ValueError, match="bad request"):
        bad.result(timeout=10)
    assert {f.result(timeout=10) for f in good} <= {"x", "y"}


def test_a_lone_caller_returns_to_the_context_of_its_conversation(
    pool: ContextPool[str],
) -> None:
    first = pool.submit("a", where).result(timeout=10)
    deadline = time.monotonic() + 10
    while not all(pool._idle) and time.monotonic() < deadline:  # both workers started
        time.sleep(0.001)
    other = "y" if first == "x" else "x"
    for _ in range(5):
        assert pool.submit("a", where).result(timeout=10) == first
        assert pool.submit("b", where).result(timeout=10) == other


def test_a_busy_workers_conversation_goes_to_an_idle_worker(pool: ContextPool[str]) -> None:
    gate = threading.Event()
    started = threading.Event()

    def hold() -> str:
        started.set()
        gate.wait(10)
        return where()

    held: Future[str] = pool.submit("a", hold)
    assert started.wait(10)
    answered = pool.submit("a", where).result(timeout=10)  # while "a"'s worker is busy
    gate.set()
    assert {held.result(timeout=10), answered} == {"x", "y"}  # no core waited


def test_shutdown_runs_what_is_queued_then_refuses(pool: ContextPool[str]) -> None:
    futures = [pool.submit(key, where) for key in "abcabc"]
    pool.shutdown()
    assert all(f.done() and f.result() in {"x", "y"} for f in futures)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit("a", where)

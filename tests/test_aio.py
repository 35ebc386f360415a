"""The sync/async bridge: each function runs the work where it says and carries the caller's context.

Concurrency is shown with barriers (a serial run breaks them), never with clocks.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from promptopt import aio

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def _who_and_where() -> tuple[str, threading.Thread]:
    await asyncio.sleep(0)
    return WHO.get(), threading.current_thread()


def test_run_from_plain_code_and_from_a_function_called_inside_a_loop():
    assert contextvars.copy_context().run(_set_and_run, "plain")[0] == "plain"

    def sync_helper() -> tuple[str, threading.Thread]:
        return aio.run(_who_and_where())  # this thread already runs a loop

    async def main() -> tuple[str, threading.Thread]:
        WHO.set("inside")
        return sync_helper()

    who, where = asyncio.run(main())
    assert who == "inside" and where is not threading.current_thread()


def _set_and_run(who: str) -> tuple[str, threading.Thread]:
    WHO.set(who)
    return aio.run(_who_and_where())


def test_run_raises_what_the_coroutine_raised_inside_a_loop():
    async def fails() -> None:
        raise KeyError("lost")

    async def main() -> None:
        aio.run(fails())

    with pytest.raises(KeyError, match="lost"):
        asyncio.run(main())


def test_run_on_runs_on_that_loop_with_the_callers_context():
    with_loop = aio.LoopThread(name="test-loop")
    try:
        loop = with_loop.loop
        token = WHO.set("caller")
        try:
            who, where = aio.run_on(loop, _who_and_where())
        finally:
            WHO.reset(token)
        assert who == "caller" and where.name == "test-loop"
        # from the loop's own thread it would wait for ever: refused, the coroutine closed
        coro = _who_and_where()
        with pytest.raises(RuntimeError, match="await instead"):
            with_loop.run(_calls_run_on(loop, coro))
        assert coro.cr_frame is None
    finally:
        with_loop.close()


async def _calls_run_on(loop: asyncio.AbstractEventLoop, coro: object) -> object:
    return aio.run_on(loop, coro)  # type: ignore[arg-type]


def test_a_loop_thread_serves_every_call_on_one_loop_until_closed():
    with_loop = aio.LoopThread(name="test-loop")
    first = with_loop.run(_who_and_where())[1]
    second = with_loop.run(_who_and_where())[1]
    assert first is second and first.is_alive()
    with_loop.close()
    first.join(timeout=30)
    assert not first.is_alive()
    assert with_loop.run(_who_and_where())[1] is not first  # started again on use
    with_loop.close()


async def test_await_on_leaves_the_callers_loop_free_and_carries_the_context():
    with_loop = aio.LoopThread(name="test-loop")
    released = threading.Event()

    async def held() -> tuple[str, threading.Thread]:
        # released only by a task of the caller's loop: it runs only if that loop is free
        assert await aio.in_thread(released.wait, 30), "the caller's loop was blocked"
        return await _who_and_where()

    async def release() -> None:
        released.set()

    try:
        WHO.set("awaiting")
        releasing = asyncio.ensure_future(release())
        who, where = await aio.await_on(with_loop.loop, held())
        assert releasing.done()
        assert who == "awaiting" and where.name == "test-loop"
        here = await aio.await_on(asyncio.get_running_loop(), _who_and_where())
        assert here == ("awaiting", threading.current_thread())
    finally:
        with_loop.close()


async def test_in_thread_runs_calls_at_once_and_hands_back_errors():
    barrier = threading.Barrier(4, timeout=30)  # broken unless four wait at the same time

    def blocking(n: int) -> tuple[int, str, threading.Thread]:
        barrier.wait()
        return n, WHO.get(), threading.current_thread()

    WHO.set("engine")
    results = await asyncio.gather(*(aio.in_thread(blocking, n) for n in range(4)))
    assert [n for n, _, _ in results] == [0, 1, 2, 3]
    assert {who for _, who, _ in results} == {"engine"}
    assert len({thread for _, _, thread in results}) == 4
    assert threading.current_thread() not in {thread for _, _, thread in results}

    def fails() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await aio.in_thread(fails)


async def test_on_new_loop_keeps_blocking_calls_off_the_callers_loop():
    barrier = threading.Barrier(4, timeout=30)
    loops: list[asyncio.AbstractEventLoop] = []

    async def workflow(n: int) -> tuple[int, str]:
        loops.append(asyncio.get_running_loop())
        barrier.wait()  # a plain blocking call inside async code
        return n, WHO.get()

    WHO.set("engine")
    results = await asyncio.gather(*(aio.on_new_loop(workflow(n)) for n in range(4)))
    assert results == [(n, "engine") for n in range(4)]
    assert len(set(loops)) == 4 and asyncio.get_running_loop() not in loops


async def test_cancelling_the_caller_cancels_the_coroutine_on_its_new_loop():
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.ensure_future(aio.on_new_loop(forever()))
    await aio.in_thread(started.wait, 30)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await aio.in_thread(cancelled.wait, 30)

"""The one bridge between synchronous code, threads and asyncio event loops.

Every function here carries the caller's ``contextvars`` (the graph's trace
state among them) to wherever the work runs, so a node that runs in another
thread or on another loop still records into the caller's trace:

- :func:`run`: run a coroutine to completion from synchronous code, on a
  private loop in a helper thread when this thread already runs one;
- :func:`run_on` / :func:`await_on`: run a coroutine on a given loop (another
  thread's) and wait for it, blocking the calling thread / awaiting it from a
  coroutine on a different loop;
- :func:`in_thread`: await a blocking function, run in a thread of its own;
- :func:`on_new_loop`: await a coroutine run on a fresh loop in a thread of its
  own, so nothing it blocks on can block the caller's loop; cancelling the
  awaiting task cancels it;
- :class:`LoopThread`: a long-lived loop in a daemon thread, for synchronous
  callers that must reuse loop-bound resources (HTTP connection pools);
- :class:`Outcome`: a function's value or exception, caught in one thread and
  re-raised (or handed to a future) in another.

Threads are started per call rather than drawn from an executor: the callers
bound their own concurrency (the engine's gate), and an executor sized for the
CPU count would cap it below that. This module imports nothing from the rest
of the project, so any layer may use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["LoopThread", "Outcome", "await_on", "in_thread", "on_new_loop", "run", "run_on"]

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Outcome(Generic[T]):
    """What a function called in a worker thread came to: its value or its exception."""

    __slots__ = ("error", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.value: T | None = None
        self.error: BaseException | None = None
        try:
            self.value = fn()
        except BaseException as exc:  # handed to the waiting side, which re-raises it
            self.error = exc

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # fn returned it: T, None included

    def settle(self, future: concurrent.futures.Future[T] | asyncio.Future[T]) -> None:
        """Hand the value or the exception to ``future``'s waiters (a thread's or a loop's)."""
        if self.error is not None:
            future.set_exception(self.error)
        else:
            future.set_result(self.unwrap())


def _start(name: str, target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, name=name)
    thread.start()
    return thread


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code and return its result.

    In a thread that runs no loop this is ``asyncio.run``. In one that does
    (a synchronous function called from async code), the coroutine runs on a
    private loop in a helper thread while this thread waits: it blocks this
    thread's loop for that long, but never fails with "cannot be called from a
    running event loop".
    """
    if _running_loop() is None:
        return asyncio.run(coro)
    context = contextvars.copy_context()
    outcomes: list[Outcome[T]] = []

    def work() -> None:
        outcomes.append(Outcome(lambda: context.run(asyncio.run, coro)))

    _start("promptopt-run", work).join()
    return outcomes[0].unwrap()


def run_on(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    *,
    timeout: float | None = None,
) -> T:
    """Run ``coro`` on ``loop`` (running in another thread) and block until it ends.

    The coroutine runs in a copy of the caller's context (``call_soon_threadsafe``
    captures it and the task starts from it). Calling this from ``loop``'s own
    thread would wait for ever, so it raises ``RuntimeError``.
    """
    if _running_loop() is loop:
        coro.close()
        raise RuntimeError("run_on() was called from the loop it would wait for; await instead")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


async def await_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run on ``loop``; the running loop stays free meanwhile.

    The coroutine runs in a copy of the caller's context; cancelling the
    awaiting task cancels it. On ``loop`` itself this is a plain ``await``.
    """
    if _running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` run in a new thread, in a copy of the caller's context.

    A cancelled caller stops waiting; the function still runs to its end.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Outcome[T]) -> None:
        if not done.done():  # else the caller was cancelled meanwhile
            outcome.settle(done)

    def work() -> None:
        outcome = Outcome(lambda: context.run(fn, *args, **kwargs))
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    _start(f"promptopt-{getattr(fn, '__name__', 'call')}", work)
    return await done


async def on_new_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run on a fresh event loop in a new thread, in a copy of the caller's context.

    Whatever the coroutine blocks on (a synchronous call inside it) blocks its
    own loop only. Cancelling the awaiting task cancels the coroutine there.
    """
    started = threading.Event()
    cancelled = threading.Event()
    inner: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        inner.append((asyncio.get_running_loop(), task))
        started.set()
        if cancelled.is_set():
            coro.close()
            raise asyncio.CancelledError
        return await coro

    try:
        return await in_thread(asyncio.run, main())
    except asyncio.CancelledError:
        cancelled.set()
        if started.is_set():
            loop, task = inner[0]
            with contextlib.suppress(RuntimeError):  # that loop already ended
                loop.call_soon_threadsafe(task.cancel)
        raise


class LoopThread:
    """An event loop running for ever in a daemon thread, started on first use.

    :meth:`run` runs a coroutine there from synchronous code (any thread but
    the loop's own), in a copy of the caller's context, so objects bound to
    that loop (connection pools) serve every call. :meth:`close` stops it.
    """

    def __init__(self, *, name: str = "promptopt-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LoopThread(name={self.name!r}, running={self._loop is not None!r})"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The thread's loop, started now if it is not running."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name=self.name, daemon=True
                )
                self._thread.start()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the thread's loop and block until it ends (or ``timeout`` passes)."""
        return run_on(self.loop, coro, timeout=timeout)

    def close(self, *, timeout: float | None = None) -> None:
        """Stop the loop and, from any other thread, wait for it and close it."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout)
            loop.close()

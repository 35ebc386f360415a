"""Worker threads that each own one llama.cpp context, fed by conversation.

The ``local`` backend keeps a context's KV cache of the conversation before a
request's last message (system line, exemplars), so the next request with the
same conversation evaluates only its own last message. Which worker takes which
request decides how often that happens: with requests of five candidates waiting
and two contexts, plain arrival order has both contexts evaluate every
candidate's conversation. :class:`ContextPool` hands a worker that comes free

1. the oldest waiting request of the conversation it served last, else
2. the oldest of a conversation no other worker served last, else
3. the oldest request (a free core never waits while work does),

and a request that arrives while workers are idle goes to the one that served
its conversation last, else to one that has served nothing yet. A request passed over :data:`PATIENCE` times is taken
next, so a stream of one conversation cannot hold another back for long. The
order changes no answer: every context computes a request as a lone one would.

A request cancelled while it waits (its :class:`~concurrent.futures.Future`
cancelled) is dropped without running. This module knows nothing of llama.cpp.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from promptopt.aio import Outcome

__all__ = ["PATIENCE", "ContextPool"]

C = TypeVar("C")
PATIENCE = 32  # times the oldest waiting request may be passed over


@dataclass(slots=True)
class _Job:
    key: Hashable
    run: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)
    passed: int = 0


class ContextPool(Generic[C]):
    """One worker thread per context; ``bind(context)`` runs first in its thread."""

    def __init__(self, contexts: Sequence[C], *, name: str, bind: Callable[[C], None]) -> None:
        self._contexts = list(contexts)
        self._name = name
        self._bind = bind
        self._lock = threading.Lock()
        self._wake = [threading.Condition(self._lock) for _ in self._contexts]
        self._idle = [False] * len(self._contexts)
        self._served: list[Hashable] = [None] * len(self._contexts)  # last conversation each
        self._queue: list[_Job] = []
        self._threads: list[threading.Thread] = []
        self._closing = False

    def submit(self, key: Hashable, run: Callable[[], Any]) -> Future[Any]:
        """Queue ``run`` (a request of conversation ``key``); its future has the answer."""
        job = _Job(key, run)
        with self._lock:
            if self._closing:
                raise RuntimeError(f"{self._name} is shut down")
            if not self._threads:
                self._start()
            self._queue.append(job)
            idle = [i for i, waiting in enumerate(self._idle) if waiting]
            if idle:
                same = [i for i in idle if self._served[i] == key]
                fresh = [i for i in idle if self._served[i] is None]
                woken = (same or fresh or idle)[0]
                self._idle[woken] = False  # the next request wakes another
                self._wake[woken].notify()
        return job.future

    def shutdown(self) -> None:
        """Run what is queued, then stop every worker and wait for it."""
        with self._lock:
            self._closing = True
            for wake in self._wake:
                wake.notify()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join()

    def _start(self) -> None:
        for i in range(len(self._contexts)):
            thread = threading.Thread(
                target=self._work, args=(i,), name=f"{self._name}-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self, i: int) -> None:
        self._bind(self._contexts[i])
        while True:
            with self._lock:
                job = self._take(i)
                while job is None:
                    if self._closing:
                        return
                    self._idle[i] = True
                    self._wake[i].wait()
                    job = self._take(i)
            outcome = Outcome(job.run)
            with self._lock:  # free before its caller hears, so the caller's next request
                self._idle[i] = True  # can come back to this context
            outcome.settle(job.future)
            del job, outcome  # the answer is its caller's to keep, not this thread's

    def _take(self, i: int) -> _Job | None:
        """The job worker ``i`` runs next (the rules in the module docstring); None: none."""
        self._queue = [job for job in self._queue if not job.future.cancelled()]
        if not self._queue:
            return None
        others = {key for j, key in enumerate(self._served) if j != i}
        own, unclaimed = None, None
        for index, job in enumerate(self._queue):
            if job.key == self._served[i]:
                own = index
                break
            if unclaimed is None and job.key not in others:
                unclaimed = index
        head = self._queue[0]
        index = own if own is not None else unclaimed if unclaimed is not None else 0
        if index and head.passed >= PATIENCE:
            index = 0
        elif index:
            head.passed += 1
        job = self._queue.pop(index)
        if not job.future.set_running_or_notify_cancel():  # cancelled since the filter above
            return self._take(i)
        self._served[i] = job.key
        self._idle[i] = False
        return job

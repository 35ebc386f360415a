"""The parent's handle on one sandbox worker: JSON lines over pipes, one future per call.

:class:`WorkerProcess` starts the worker (:mod:`promptopt.sandbox.worker`),
waits for its ``ready`` line, and then serves any number of concurrent calls
from any thread or event loop: :meth:`submit` writes a request and returns a
:class:`concurrent.futures.Future` that a reader thread completes when the
worker's answer line arrives. The worker is a separate process tree, so a
call never holds the GIL or an event loop while the code runs.

Every line from the worker is checked before it is believed: its size is
capped, it must be one JSON object of the expected shape, and its ``id`` must
belong to a call in flight. A worker that breaks the protocol or dies fails
every call in flight and is not used again.

The worker is started from one thread that lives as long as the process
(:func:`_spawn`): bubblewrap's ``--die-with-parent`` is the kernel's
``PR_SET_PDEATHSIG``, which fires when the *thread* that forked it ends, so a
worker started from a short-lived thread would die with it, and one started
from any thread dies with the process, SIGKILL included. Isolated, bubblewrap
names the namespace's init on its info pipe; :meth:`WorkerProcess.close`
kills it through a pidfd (never a pid that may have been reused), which ends
every process of the sandbox, stopped or spinning.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import IO, Any, TypeVar

from promptopt.errors import SandboxError

__all__ = ["WorkerGone", "WorkerProcess"]

T = TypeVar("T")

_START_TIMEOUT_S = 60.0
_CLOSE_WAIT_S = 2.0  # opted out, the worker's own time to kill its children's groups
_TAIL_BYTES = 8192
_ANSWER_FIELDS: Mapping[str, tuple[type, ...]] = {
    "answer": (str, type(None)),
    "timed_out": (bool,),
    "oversize": (bool,),
    "malformed": (bool,),
    "too_many_files": (bool,),
    "returncode": (int,),
    "stdout": (str,),
    "stderr": (str,),
    "duration_s": (int, float),
}


class WorkerGone(Exception):
    """The worker died or broke the protocol while a call was in flight."""


_spawn_queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
_spawn_lock = threading.Lock()
_spawner: threading.Thread | None = None


def _serve_spawns() -> None:
    while True:
        fn, future = _spawn_queue.get()
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)


def _spawn(fn: Callable[[], T]) -> T:
    """Run ``fn`` (a ``Popen``) on the process's one spawning thread, which never ends."""
    global _spawner
    with _spawn_lock:
        if _spawner is None:
            _spawner = threading.Thread(
                target=_serve_spawns, name="promptopt-sandbox-spawner", daemon=True
            )
            _spawner.start()
    future: Future[T] = Future()
    _spawn_queue.put((fn, future))
    return future.result()


class WorkerProcess:
    """A running worker and the calls in flight on it."""

    def __init__(
        self,
        argv: Sequence[str] | Callable[[int], Sequence[str]],
        *,
        env: Mapping[str, str],
        cwd: str,
        line_limit: int,
    ) -> None:
        """Start ``argv``; a callable gets the write end of bubblewrap's info pipe."""
        self._line_limit = line_limit
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._started: dict[int, float | None] = {}  # None: waiting in the worker's queue
        self._stderr = bytearray()
        self._ready: Future[None] = Future()
        self._init: int | None = None  # a pidfd of the namespace's init, when isolated
        self.dead: str | None = None
        info_r, info_w = os.pipe() if callable(argv) else (-1, -1)
        command = list(argv(info_w) if callable(argv) else argv)
        try:
            self._proc = _spawn(
                lambda: subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(env),
                    cwd=cwd,
                    close_fds=True,
                    pass_fds=(info_w,) if info_w >= 0 else (),
                    start_new_session=True,
                )
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox worker {command[0]!r}: {exc}") from exc
        finally:
            if info_w >= 0:
                os.close(info_w)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        for target, stream in ((self._read_answers, self._proc.stdout),
                               (self._read_stderr, self._proc.stderr)):  # fmt: skip
            threading.Thread(
                target=target, args=(stream,), name="promptopt-sandbox-io", daemon=True
            ).start()
        try:
            self._ready.result(timeout=_START_TIMEOUT_S)
            if info_r >= 0:
                self._init = _open_init(info_r)
        except Exception as exc:
            self.close()
            why = self.stderr_tail().strip().splitlines()[-1:] or [str(exc) or type(exc).__name__]
            raise SandboxError(f"the sandbox worker did not start: {why[0]}") from exc
        finally:
            if info_r >= 0:
                os.close(info_r)

    @property
    def pid(self) -> int:
        """The worker's process id (bubblewrap's, when isolated)."""
        return self._proc.pid

    def stderr_tail(self) -> str:
        return bytes(self._stderr[-_TAIL_BYTES:]).decode("utf-8", "replace")

    def submit(self, request: Mapping[str, Any]) -> tuple[int, Future[dict[str, Any]]]:
        """Send one call; its future holds the worker's checked answer or raises WorkerGone."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if self.dead is not None:
                raise WorkerGone(self.dead)
            call_id = next(self._ids)
            self._pending[call_id] = future
            self._started[call_id] = time.monotonic()
            self._write({**request, "id": call_id})
        return call_id, future

    def started_at(self, call_id: int) -> float | None:
        """When the call's child started (monotonic), or None while it waits for a free slot."""
        with self._lock:
            return self._started.get(call_id, 0.0)

    def cancel(self, call_id: int) -> None:
        """Kill one call's child; its future is dropped, never completed."""
        with self._lock:
            self._started.pop(call_id, None)
            if self._pending.pop(call_id, None) is not None and self.dead is None:
                self._write({"cancel": call_id})

    def close(self) -> None:
        """End the worker and every process it started; fail what is in flight."""
        with self._lock:
            self._fail_locked("the sandbox worker was closed", kill=False)
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # opted out, the worker then kills its children's groups
        if self._init is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=_CLOSE_WAIT_S)
        self._kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        init, self._init = self._init, None
        if init is not None:
            os.close(init)

    def _kill(self) -> None:
        """SIGKILL the namespace's init (the whole sandbox) and the process we started."""
        if self._init is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._init, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self._proc.kill()

    def _write(self, message: Mapping[str, Any]) -> None:
        """Write one line (the lock is held)."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message).encode("utf-8") + b"\n")
            self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            self._fail_locked(f"the sandbox worker stopped reading: {exc}")
            raise WorkerGone(self.dead) from exc

    def _read_answers(self, stream: IO[bytes]) -> None:
        try:
            while line := stream.readline(self._line_limit + 1):
                if len(line) > self._line_limit or not line.endswith(b"\n"):
                    self._fail(f"the sandbox worker sent a line over {self._line_limit} bytes")
                    return
                self._dispatch(line)
        except (OSError, ValueError):
            pass
        finally:
            last = self.stderr_tail().strip().splitlines()[-1:] or ["no output"]
            self._fail(f"the sandbox worker ended (status {self._proc.poll()}): {last[0]}")
            with contextlib.suppress(OSError):
                stream.close()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self._fail("the sandbox worker sent a line that is not JSON")
            return
        if not self._ready.done():
            if message == {"ready": True}:
                self._ready.set_result(None)
            else:
                self._fail("the sandbox worker did not say it was ready")
            return
        if _is_progress(message):
            with self._lock:
                if message["id"] in self._started:
                    self._started[message["id"]] = (
                        time.monotonic() if message.get("started") else None
                    )
            return
        problem = _shape_problem(message)
        if problem:
            self._fail(f"the sandbox worker sent a malformed answer: {problem}")
            return
        with self._lock:
            future = self._pending.pop(message["id"], None)
            self._started.pop(message["id"], None)
        if future is not None:  # None: a cancelled call
            future.set_result(message)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read1(1 << 16):  # type: ignore[attr-defined]
                self._stderr += chunk
                if len(self._stderr) > 2 * _TAIL_BYTES:
                    del self._stderr[:-_TAIL_BYTES]

    def _fail(self, why: str) -> None:
        with self._lock:
            self._fail_locked(why)

    def _fail_locked(self, why: str, *, kill: bool = True) -> None:
        if self.dead is None:
            self.dead = why
            if kill:
                self._kill()
        pending, self._pending = self._pending, {}
        self._started.clear()
        if not self._ready.done():
            self._ready.set_exception(WorkerGone(why))
        for future in pending.values():
            future.set_exception(WorkerGone(self.dead))


def _open_init(info: int) -> int | None:
    """A pidfd of the namespace's init, from bubblewrap's ``{"child-pid": N}`` on ``info``.

    Read once the worker said it was ready, so bubblewrap has written it; the
    pipe may stay open (the worker inherits it), so the object is read whole
    or not at all, without waiting for its end.
    """
    os.set_blocking(info, False)
    text = b""
    with contextlib.suppress(BlockingIOError):
        while len(text) < 65536 and (chunk := os.read(info, 4096)):
            text += chunk
    try:
        pid = json.JSONDecoder().raw_decode(text.decode("utf-8", "replace").strip())[0]
        pid = pid["child-pid"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SandboxError(f"bubblewrap's info pipe held no child pid: {text[:200]!r}") from exc
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise SandboxError(f"bubblewrap named no usable child pid: {pid!r}")
    try:
        return os.pidfd_open(pid)
    except OSError:  # before Linux 5.3; closing stdin and bwrap's death signal still hold
        return None


def _is_progress(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("id"), int)
        and (message.keys() == {"id", "queued"} or message.keys() == {"id", "started"})
    )


def _shape_problem(message: Any) -> str | None:
    if not isinstance(message, dict) or not isinstance(message.get("id"), int):
        return "no call id"
    for name, types in _ANSWER_FIELDS.items():
        if not isinstance(message.get(name), types) or isinstance(message.get(name), bool) != (
            bool in types
        ):
            return f"field {name!r}"
    return None

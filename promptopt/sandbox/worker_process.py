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
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import IO, Any

from promptopt.errors import SandboxError

__all__ = ["WorkerGone", "WorkerProcess"]

_START_TIMEOUT_S = 60.0
_TAIL_BYTES = 8192
_ANSWER_FIELDS: Mapping[str, tuple[type, ...]] = {
    "answer": (str, type(None)),
    "timed_out": (bool,),
    "oversize": (bool,),
    "returncode": (int,),
    "stdout": (str,),
    "stderr": (str,),
    "duration_s": (int, float),
}


class WorkerGone(Exception):
    """The worker died or broke the protocol while a call was in flight."""


class WorkerProcess:
    """A running worker and the calls in flight on it."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        line_limit: int,
    ) -> None:
        self._line_limit = line_limit
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._stderr = bytearray()
        self._ready: Future[None] = Future()
        self.dead: str | None = None
        try:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox worker {argv[0]!r}: {exc}") from exc
        assert self._proc.stdout is not None and self._proc.stderr is not None
        for target, stream in ((self._read_answers, self._proc.stdout),
                               (self._read_stderr, self._proc.stderr)):  # fmt: skip
            threading.Thread(
                target=target, args=(stream,), name="promptopt-sandbox-io", daemon=True
            ).start()
        try:
            self._ready.result(timeout=_START_TIMEOUT_S)
        except Exception as exc:
            self.close()
            why = self.stderr_tail().strip().splitlines()[-1:] or [str(exc) or type(exc).__name__]
            raise SandboxError(f"the sandbox worker did not start: {why[0]}") from exc

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
            self._write({**request, "id": call_id})
        return call_id, future

    def cancel(self, call_id: int) -> None:
        """Kill one call's child; its future is dropped, never completed."""
        with self._lock:
            if self._pending.pop(call_id, None) is not None and self.dead is None:
                self._write({"cancel": call_id})

    def close(self) -> None:
        """End the worker (it kills its children when its stdin closes) and fail what is in flight."""
        self._fail("the sandbox worker was closed")
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        with contextlib.suppress(OSError):
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)

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
        except ValueError:
            self._fail("the sandbox worker sent a line that is not JSON")
            return
        if not self._ready.done():
            if message == {"ready": True}:
                self._ready.set_result(None)
            else:
                self._fail("the sandbox worker did not say it was ready")
            return
        problem = _shape_problem(message)
        if problem:
            self._fail(f"the sandbox worker sent a malformed answer: {problem}")
            return
        with self._lock:
            future = self._pending.pop(message["id"], None)
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

    def _fail_locked(self, why: str) -> None:
        if self.dead is None:
            self.dead = why
            with contextlib.suppress(OSError):
                self._proc.kill()
        pending, self._pending = self._pending, {}
        if not self._ready.done():
            self._ready.set_exception(WorkerGone(why))
        for future in pending.values():
            future.set_exception(WorkerGone(self.dead))


def _shape_problem(message: Any) -> str | None:
    if not isinstance(message, dict) or not isinstance(message.get("id"), int):
        return "no call id"
    for name, types in _ANSWER_FIELDS.items():
        if not isinstance(message.get(name), types) or isinstance(message.get(name), bool) != (
            bool in types
        ):
            return f"field {name!r}"
    return None

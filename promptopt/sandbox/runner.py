"""The parent side of the sandbox: :class:`Sandbox` runs functions of LLM-proposed source.

A :class:`Sandbox` owns one warm worker process (started on first use, started
again if it dies), which forks a fresh, limited child for every call (see
:mod:`promptopt.sandbox.worker`). By default the worker lives inside
bubblewrap's namespaces and every child under seccomp
(:mod:`promptopt.sandbox.isolation`); where that cannot work, proposed code
does not run unless the caller opted out with ``isolation="none"``, which logs
one warning saying what that means.

Each call gets

- an environment built from scratch: only the ``env_allow`` names are copied,
  never one whose name holds KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL
  (:func:`promptopt.secrets.is_secret_env_name`);
  HOME and TMPDIR point at a fresh work folder, which is also cwd; isolated,
  ``PATH`` is ``/usr/bin:/bin``;
- a wall-clock timeout after which its child is killed (``RLIMIT_CPU`` is the
  backstop), counted from when its child starts: at most 16 run at once per
  worker, the rest wait in its queue;
- ``memory_mb`` in all: ⅛ of it (at least 4 MiB) for files in its own tmpfs,
  the rest as its address-space limit (``RLIMIT_AS``); no shared memory, one
  task, 64 descriptors;
- no writable descriptor of the parent's: the answer comes back on a pipe,
  size-capped, printable ASCII only, and is validated as JSON of the expected
  shape here (a parse error of any kind, nesting depth included, is the call's
  failure).

The parent never raises for the code's failures: every outcome is a
:class:`SandboxResult`. Misuse (bad arguments) raises :class:`ConfigError`;
a machine where the sandbox cannot run raises :class:`SandboxError`.
``run`` and ``arun`` share one implementation: the worker answers through a
:class:`concurrent.futures.Future`, which ``run`` waits on and ``arun`` awaits,
so neither blocks an event loop with the code's work.
"""

from __future__ import annotations

import asyncio
import json
import keyword
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from promptopt import aio
from promptopt.errors import ConfigError, SandboxError
from promptopt.sandbox.isolation import (
    ISOLATIONS,
    Isolation,
    bwrap_command,
    isolation_problem,
    worker_command,
)
from promptopt.sandbox.worker_process import WorkerGone, WorkerProcess
from promptopt.secrets import is_secret_env_name

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "Sandbox",
    "SandboxError",
    "SandboxKind",
    "SandboxResult",
    "scrubbed_environment",
]

SandboxKind = Literal["ok", "exception", "timeout", "memory", "killed", "invalid"]

logger = logging.getLogger(__name__)

DEFAULT_ENV_ALLOW: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "PYTHONHASHSEED")
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})
_GRACE_S = 10.0  # how long past its timeout a call may take before the worker is deemed hung
_LAST_LOOK_S = 0.05  # an overdue call's answer may be on its way through the event loop
_QUEUED_POLL_S = 0.5  # how often a call waiting for a free slot looks whether it started
_MIN_MEMORY_MB = 32  # the bare interpreter needs about 13 MiB of address space
_SLOTS = 16  # calls running at once in one worker; more wait in its queue
_MIN_FILE_BYTES = 4 << 20
_TAIL_CHARS = 6 * 8192  # an output tail of 8 KiB, every byte escaped as \u00XX at worst
_ISOLATED_PATH = "/usr/bin:/bin"
_MEMORY_HINTS = ("MemoryError", "Cannot allocate memory", "out of memory", "std::bad_alloc")
_ANSWER_KINDS = ("ok", "exception", "memory", "invalid")
_NONE_WARNING = (
    "sandbox isolation is off (isolation: none): proposed code runs as your user, "
    "able to read your files and the network; only its environment is scrubbed"
)


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one sandboxed call came to.

    ``value`` is the function's return value after a JSON round trip (tuples
    come back as lists); ``error`` is one line, a newline, then the child's
    short traceback; ``stdout`` and ``stderr`` are the last few KiB the code
    printed.
    """

    ok: bool
    value: Any
    error: str | None
    kind: SandboxKind
    duration_s: float
    stdout: str = ""
    stderr: str = ""


def scrubbed_environment(
    environ: Mapping[str, str], *, allow: Sequence[str], home: str
) -> dict[str, str]:
    """The worker's environment: only allowed, secret-free names, with HOME and TMPDIR at ``home``."""
    env = {
        name: environ[name] for name in allow if name in environ and not is_secret_env_name(name)
    }
    env.update(HOME=home, TMPDIR=home, TMP=home, TEMP=home)
    return env


class Sandbox:
    """Runs functions from untrusted source in limited, throw-away child processes.

    The candidate sees the standard library only, takes and returns JSON
    values, and may write only inside its own work folder, which is removed
    after the call. ``memory_mb`` is all the RAM a call may hold: ⅛ of it for
    its files, the rest for its address space; ``max_result_bytes`` caps its
    answer. Call :meth:`close` (or use ``with``) to end the worker and every
    process of the sandbox early; it also ends with the object or the process,
    SIGKILL included.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        memory_mb: int = 256,
        env_allow: Sequence[str] = DEFAULT_ENV_ALLOW,
        isolation: Isolation = "namespaces",
        max_result_bytes: int = 1 << 20,
    ) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise ConfigError(f"timeout_s must be a number, not {timeout_s!r}")
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ConfigError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
            raise ConfigError(f"memory_mb must be an int, not {memory_mb!r}")
        if memory_mb < _MIN_MEMORY_MB:
            raise ConfigError(f"memory_mb must be at least {_MIN_MEMORY_MB}, not {memory_mb!r}")
        if isinstance(env_allow, str) or not all(
            isinstance(name, str) and name and "=" not in name for name in env_allow
        ):
            raise ConfigError(f"env_allow must be a sequence of variable names, not {env_allow!r}")
        if isolation not in ISOLATIONS:
            raise ConfigError(f"isolation must be one of {list(ISOLATIONS)!r}, not {isolation!r}")
        if isinstance(max_result_bytes, bool) or not isinstance(max_result_bytes, int):
            raise ConfigError(f"max_result_bytes must be an int, not {max_result_bytes!r}")
        if max_result_bytes < 1024:
            raise ConfigError(f"max_result_bytes must be at least 1024, not {max_result_bytes!r}")
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.env_allow = tuple(env_allow)
        self.isolation: Isolation = isolation
        self.max_result_bytes = max_result_bytes
        self._lock = threading.Lock()
        self._worker: WorkerProcess | None = None
        self._folder: str | None = None
        if isolation == "none":
            logger.warning(_NONE_WARNING)

    def __repr__(self) -> str:
        return (
            f"Sandbox(timeout_s={self.timeout_s!r}, memory_mb={self.memory_mb!r}, "
            f"env_allow={self.env_allow!r}, isolation={self.isolation!r})"
        )

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def problem(self) -> str | None:
        """Why this sandbox cannot run proposed code here, or None (nothing is started)."""
        if self.isolation == "none":
            return None
        problem = isolation_problem()
        if problem is None:
            return None
        return (
            f"proposed code cannot run isolated: {problem}; to run it without isolation, "
            "opt out with 'sandbox: {isolation: none}' in the task (Sandbox(isolation='none'))"
        )

    def run(
        self,
        source: str,
        function: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] = _NO_KWARGS,
    ) -> SandboxResult:
        """Call ``function`` defined by ``source`` with ``args``/``kwargs`` in a child; wait for it."""
        worker, call_id, future = self._submit(self._request(source, function, args, kwargs))
        try:
            while True:
                wait = self._patience(worker, call_id)
                try:
                    return _result(future.result(timeout=_LAST_LOOK_S if wait is None else wait))
                except FutureTimeout:
                    if wait is None:
                        return self._hung(worker)
        except WorkerGone as exc:
            return _gone(str(exc))

    async def arun(
        self,
        source: str,
        function: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] = _NO_KWARGS,
    ) -> SandboxResult:
        """Like :meth:`run`, awaited: the event loop goes on while the code runs."""
        request = self._request(source, function, args, kwargs)
        worker, call_id, future = await aio.in_thread(self._submit, request)
        answer = asyncio.wrap_future(future)
        try:
            while True:
                wait = self._patience(worker, call_id)
                try:
                    return _result(
                        await asyncio.wait_for(
                            asyncio.shield(answer), timeout=_LAST_LOOK_S if wait is None else wait
                        )
                    )
                except TimeoutError:
                    if wait is None:
                        answer.cancel()  # nobody will read what the closed worker fails it with
                        return self._hung(worker)
        except WorkerGone as exc:
            return _gone(str(exc))
        except asyncio.CancelledError:
            worker.cancel(call_id)  # the child must not outlive the call
            answer.cancel()
            raise

    def close(self) -> None:
        """End the worker and remove its folder; a later call starts a fresh one."""
        with self._lock:
            worker, self._worker = self._worker, None
            folder, self._folder = self._folder, None
        _stop(worker, folder)

    def _submit(self, request: dict[str, Any]) -> tuple[WorkerProcess, int, Future[Any]]:
        for attempt in range(2):  # a worker found dead is replaced once
            worker = self._ensure_worker()
            try:
                call_id, future = worker.submit(request)
            except WorkerGone:
                if attempt:
                    raise SandboxError(f"the sandbox worker keeps dying: {worker.dead}") from None
                continue
            return worker, call_id, future
        raise AssertionError("unreachable")

    def _ensure_worker(self) -> WorkerProcess:
        with self._lock:
            if self._worker is not None and self._worker.dead is None:
                return self._worker
            old, old_folder = self._worker, self._folder
            self._worker = self._folder = None
            _stop(old, old_folder)
            problem = self.problem()
            if problem is not None:
                raise SandboxError(problem)
            self._worker, self._folder = self._start()
            weakref.finalize(self, _stop, self._worker, self._folder)
            return self._worker

    def _start(self) -> tuple[WorkerProcess, str | None]:
        """Start a worker; opted out, with a host folder of its own (isolated, it needs none).

        Isolated, every file a call writes lives on the sandbox's own tmpfs, so
        nothing of it is left on the host even if this process is SIGKILLed.
        """
        line_limit = 2 * self.max_result_bytes + 2 * _TAIL_CHARS + 4096  # `"`/`\\` escaped
        if self.isolation == "namespaces":
            env = scrubbed_environment(os.environ, allow=self.env_allow, home="/work")
            if "PATH" in env:
                env["PATH"] = _ISOLATED_PATH  # the host's says where the user keeps tools
            files = _file_bytes(self.memory_mb)

            def argv(info_fd: int) -> list[str]:
                return bwrap_command(env=env, slots=_SLOTS, slot_bytes=files, info_fd=info_fd)

            outer_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            return WorkerProcess(argv, env=outer_env, cwd="/", line_limit=line_limit), None
        try:
            folder = tempfile.mkdtemp(prefix="promptopt-sandbox-")
        except OSError as exc:
            raise SandboxError(f"cannot create a sandbox folder: {exc}") from exc
        try:
            env = scrubbed_environment(os.environ, allow=self.env_allow, home=folder)
            command = worker_command(folder, slots=_SLOTS)
            worker = WorkerProcess(command, env=env, cwd=folder, line_limit=line_limit)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return worker, folder

    def _patience(self, worker: WorkerProcess, call_id: int) -> float | None:
        """How long to wait for the call now; None once its child is overdue by the grace time.

        A call waiting in the worker's queue has no deadline yet: its clock
        starts when its child does.
        """
        started = worker.started_at(call_id)
        if started is None:
            return _QUEUED_POLL_S
        left = started + self.timeout_s + _GRACE_S - time.monotonic()
        return left if left > 0 else None

    def _hung(self, worker: WorkerProcess) -> SandboxResult:
        """The worker missed a call's deadline by the whole grace time: replace it."""
        worker.close()
        return SandboxResult(
            ok=False,
            value=None,
            error=f"the sandbox did not answer within {self.timeout_s + _GRACE_S:.0f} s",
            kind="timeout",
            duration_s=self.timeout_s + _GRACE_S,
        )

    def _request(self, source: Any, function: Any, args: Any, kwargs: Any) -> dict[str, Any]:
        if not isinstance(source, str):
            raise ConfigError(f"source must be a str, not {type(source).__name__!r}")
        if (
            not isinstance(function, str)
            or not function.isidentifier()
            or keyword.iskeyword(function)
        ):
            raise ConfigError(f"function must be a Python identifier, not {function!r}")
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise ConfigError(f"args must be a sequence, not {type(args).__name__!r}")
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise ConfigError(f"kwargs must be a mapping with str keys, not {kwargs!r}")
        request: dict[str, Any] = {
            "source": source,
            "function": function,
            "args": list(args),
            "kwargs": dict(kwargs),
        }
        try:
            json.dumps(request)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"args and kwargs must be JSON values: {exc}") from exc
        files = _file_bytes(self.memory_mb)
        request.update(
            timeout_s=self.timeout_s,
            memory_bytes=(self.memory_mb << 20) - files,
            file_bytes=files,
            cpu_s=math.ceil(self.timeout_s) + 1,
            max_result_bytes=self.max_result_bytes,
        )
        return request


def _file_bytes(memory_mb: int) -> int:
    """A call's allowance for files (its slot's tmpfs), taken out of its ``memory_mb``."""
    return max(_MIN_FILE_BYTES, (memory_mb << 20) // 8)


def _stop(worker: WorkerProcess | None, folder: str | None) -> None:
    if worker is not None:
        worker.close()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _gone(why: str) -> SandboxResult:
    return SandboxResult(
        ok=False,
        value=None,
        error=f"the sandbox worker failed: {why}",
        kind="killed",
        duration_s=0.0,
    )


def _read_answer(text: str | None) -> dict[str, Any] | None:
    """The child's answer, if it is one JSON object of the expected shape."""
    if not text:
        return None
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):  # a forged answer nested past the parser's depth
        return None
    if not isinstance(answer, dict) or set(answer) != {"kind", "error", "value"}:
        return None
    if answer["kind"] not in _ANSWER_KINDS or not isinstance(answer["error"], str | None):
        return None
    return answer


def _result(message: Mapping[str, Any]) -> SandboxResult:
    """Classify one child's end, as the worker reported it, into a :class:`SandboxResult`."""
    kind: SandboxKind
    value: Any = None
    returncode, stderr = message["returncode"], message["stderr"]
    answer = _read_answer(message["answer"])
    duration = float(message["duration_s"])
    if message["timed_out"]:
        kind, error = "timeout", f"killed after the {duration:.2f} s timeout"
    elif message["oversize"]:
        kind, error = "exception", "the return value is over the sandbox's answer size limit"
    elif message.get("too_many_files"):
        kind, error = "memory", "killed for making more files than the sandbox allows a call"
    elif message.get("malformed"):
        kind, error = "exception", "the answer is not printable JSON: the code wrote its own"
    elif answer is not None:
        kind, value, error = answer["kind"], answer["value"], answer["error"]
    elif returncode == -signal.SIGXCPU:
        kind, error = "timeout", "killed by the CPU time limit"
    elif any(hint in stderr for hint in _MEMORY_HINTS):
        kind, error = "memory", f"the child ran out of memory (exit status {returncode})"
    else:
        last = stderr.strip().splitlines()[-1:] or ["no output"]
        kind, error = (
            "killed",
            f"the child ended with status {returncode} without an answer: {last[0]}",
        )
    return SandboxResult(
        ok=kind == "ok",
        value=value,
        error=error,
        kind=kind,
        duration_s=duration,
        stdout=message["stdout"],
        stderr=stderr,
    )

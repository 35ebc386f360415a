"""The parent side of the sandbox: :class:`Sandbox` runs one function of LLM-proposed source.

Each call starts a fresh ``python -I -S -B`` child (:mod:`promptopt.sandbox.child`)
in its own process group, with

- an environment built from scratch: only the ``env_allow`` names are copied,
  never one whose name holds KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL;
  HOME, TMPDIR, TMP and TEMP point at a fresh work folder, which is also cwd;
- a wall-clock timeout after which the whole process group is killed
  (``RLIMIT_CPU`` in the child is the backstop);
- an address-space limit (``RLIMIT_AS``), so a memory bomb ends in a
  ``MemoryError`` or a dead child, never in a starved parent;
- an audit hook that refuses writes outside the work folder, spawning,
  network and ``ctypes`` (see the child's docstring for what it does not stop).

The parent never raises for the child's failures: every outcome is a
:class:`SandboxResult`. Only misuse (bad arguments) raises :class:`ConfigError`,
and a machine that cannot start a child at all raises :class:`SandboxError`.
``run`` and ``arun`` share one implementation; ``arun`` uses asyncio
subprocesses and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import keyword
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from promptopt.errors import ConfigError, SandboxError

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "Sandbox",
    "SandboxError",
    "SandboxKind",
    "SandboxResult",
    "scrubbed_environment",
]

SandboxKind = Literal["ok", "exception", "timeout", "memory", "killed", "invalid"]

DEFAULT_ENV_ALLOW: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "PYTHONHASHSEED")
_SECRET_MARKS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
_CHILD = Path(__file__).with_name("child.py")
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})
_TAIL_BYTES = 8192
_GRACE_S = 2.0  # how long to wait for pipes to close once the group is dead
_MIN_MEMORY_MB = 32  # the bare interpreter needs about 13 MiB of address space
_MEMORY_HINTS = ("MemoryError", "Cannot allocate memory", "out of memory", "std::bad_alloc")


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
    """The child's environment: only allowed, secret-free names, with HOME and TMPDIR at ``home``."""
    env = {
        name: environ[name]
        for name in allow
        if name in environ and not any(mark in name.upper() for mark in _SECRET_MARKS)
    }
    env.update(HOME=home, TMPDIR=home, TMP=home, TEMP=home)
    return env


class Sandbox:
    """Runs a function from untrusted source in a limited, throw-away child process.

    The candidate sees the standard library only (the child runs under ``-S``),
    takes and returns JSON values, and may write only inside its own temp folder,
    which is removed after the call. ``memory_mb`` also caps the size of any file
    it writes; ``PYTHONHASHSEED`` is ignored under ``-I`` even when allowed.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        memory_mb: int = 256,
        env_allow: Sequence[str] = DEFAULT_ENV_ALLOW,
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
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.env_allow = tuple(env_allow)

    def __repr__(self) -> str:
        return (
            f"Sandbox(timeout_s={self.timeout_s!r}, memory_mb={self.memory_mb!r}, "
            f"env_allow={self.env_allow!r})"
        )

    def run(
        self,
        source: str,
        function: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] = _NO_KWARGS,
    ) -> SandboxResult:
        """Call ``function`` defined by ``source`` with ``args``/``kwargs`` in a child; wait for it."""
        request = self._request(source, function, args, kwargs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._execute(request))
        # Called from inside an event loop: run on a private loop in a helper thread.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptopt-sandbox") as pool:
            return pool.submit(asyncio.run, self._execute(request)).result()

    async def arun(
        self,
        source: str,
        function: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] = _NO_KWARGS,
    ) -> SandboxResult:
        """Like :meth:`run`, on the running event loop, without blocking it."""
        return await self._execute(self._request(source, function, args, kwargs))

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
        request = {
            "source": source,
            "function": function,
            "args": list(args),
            "kwargs": dict(kwargs),
        }
        try:
            json.dumps(request)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"args and kwargs must be JSON values: {exc}") from exc
        megabytes = self.memory_mb * (1 << 20)
        request.update(
            memory_bytes=megabytes,
            file_bytes=megabytes,
            cpu_s=math.ceil(self.timeout_s) + 1,
        )
        return request

    async def _execute(self, request: dict[str, Any]) -> SandboxResult:
        try:
            base = Path(tempfile.mkdtemp(prefix="promptopt-sandbox-"))
        except OSError as exc:
            raise SandboxError(f"cannot create a sandbox folder: {exc}") from exc
        try:
            work = base / "work"
            work.mkdir()
            result_path = base / "result.json"
            request = {**request, "work": str(work), "result": str(result_path)}
            payload = json.dumps(request).encode("utf-8")
            env = scrubbed_environment(os.environ, allow=self.env_allow, home=str(work))
            started = time.monotonic()
            timed_out, returncode, out, err = await self._spawn(payload, env=env, cwd=work)
            duration = time.monotonic() - started
            answer = _read_answer(result_path)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return _result(
            timed_out=timed_out,
            returncode=returncode,
            answer=answer,
            duration_s=duration,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
        )

    async def _spawn(
        self, payload: bytes, *, env: dict[str, str], cwd: Path
    ) -> tuple[bool, int | None, bytes, bytes]:
        """Run the child to its end or to the timeout; kill its group either way."""
        if not _CHILD.is_file():
            raise SandboxError(f"the sandbox child {str(_CHILD)!r} is not a file")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                "-B",
                str(_CHILD),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start {sys.executable!r}: {exc}") from exc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeder = asyncio.create_task(_feed(proc.stdin, payload))
        readers = [asyncio.create_task(_tail(proc.stdout)), asyncio.create_task(_tail(proc.stderr))]
        waiter = asyncio.create_task(proc.wait())
        tasks = [feeder, *readers, waiter]
        killed = False
        try:
            done, _ = await asyncio.wait({waiter}, timeout=self.timeout_s)
            timed_out = waiter not in done
            _kill_group(proc.pid)  # also ends anything the code left behind in its group
            killed = True
            await asyncio.wait(tasks, timeout=_GRACE_S)
        finally:
            if not killed:  # cancelled while waiting: the child must not outlive the call
                _kill_group(proc.pid)
            for task in tasks:
                task.cancel()
        out, err = (_bytes_of(reader) for reader in readers)
        return timed_out, proc.returncode, out, err


def _bytes_of(reader: asyncio.Task[bytes]) -> bytes:
    if not reader.done() or reader.cancelled() or reader.exception() is not None:
        return b""
    return reader.result()


async def _feed(stream: asyncio.StreamWriter, payload: bytes) -> None:
    try:
        stream.write(payload)
        await stream.drain()
        stream.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child died before reading it all; its exit status tells why


async def _tail(stream: asyncio.StreamReader) -> bytes:
    """Read a pipe to its end, keeping only its last ``_TAIL_BYTES``."""
    kept = bytearray()
    while chunk := await stream.read(1 << 16):
        kept += chunk
        if len(kept) > 2 * _TAIL_BYTES:
            del kept[:-_TAIL_BYTES]
    return bytes(kept[-_TAIL_BYTES:])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pid, signal.SIGKILL)


def _read_answer(path: Path) -> dict[str, Any] | None:
    try:
        answer = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(answer, dict) or answer.get("kind") not in (
        "ok",
        "exception",
        "memory",
        "invalid",
    ):
        return None
    return answer


def _result(
    *,
    timed_out: bool,
    returncode: int | None,
    answer: dict[str, Any] | None,
    duration_s: float,
    stdout: str,
    stderr: str,
) -> SandboxResult:
    """Classify one child's end into a :class:`SandboxResult`."""
    kind: SandboxKind
    value: Any = None
    if timed_out:
        kind, error = "timeout", f"killed after the {duration_s:.2f} s timeout"
    elif answer is not None:
        kind, value, error = answer["kind"], answer.get("value"), answer.get("error")
    elif returncode is not None and returncode == -signal.SIGXCPU:
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
        duration_s=duration_s,
        stdout=stdout,
        stderr=stderr,
    )

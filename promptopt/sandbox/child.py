"""What runs in a sandbox call's forked child: confine itself, call the candidate, answer.

Imported by :mod:`promptopt.sandbox.worker` (this folder is on its ``sys.path``);
:func:`run` is the whole life of a child after the fork. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import linecache
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

_SOURCE_NAME = "<candidate>"
_RESERVE_BYTES = 1 << 20
_MAX_ERROR_CHARS = 2000
_ANSWER_FD = 3
_MAX_FILES = 64  # descriptors a call may hold: bounds its pipe and socket buffers in the kernel
_HERE = os.path.dirname(os.path.abspath(__file__))


def _short_error(exc: BaseException) -> str:
    """One line ``Type: message``, then the traceback without the worker's own frames."""
    head = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    report = traceback.TracebackException.from_exception(exc, limit=-12)
    report.stack = traceback.StackSummary.from_list(  # the sandbox's own frames are noise
        [f for f in report.stack if os.path.dirname(os.path.abspath(f.filename)) != _HERE]
    )
    text = head + "\n" + "".join(report.format()).rstrip()
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def call(request: dict[str, Any]) -> tuple[str, str, str | None]:
    """Compile, define and call; return ``(kind, value as JSON text, error)`` (never raises)."""
    source, function = request["source"], request["function"]
    try:
        code = compile(source, _SOURCE_NAME, "exec")
    except (SyntaxError, ValueError) as exc:
        return "invalid", "null", _short_error(exc)
    linecache.cache[_SOURCE_NAME] = (len(source), None, source.splitlines(True), _SOURCE_NAME)
    reserve: bytearray | None = bytearray(_RESERVE_BYTES)
    try:
        namespace: dict[str, Any] = {"__name__": "__candidate__"}
        exec(code, namespace)
        fn = namespace.get(function)
        if not callable(fn):
            return "invalid", "null", f"the source defines no function {function!r}"
        value = fn(*request["args"], **request["kwargs"])
        if hasattr(value, "__await__"):
            import asyncio

            value = asyncio.run(_awaited(value))
        try:
            return "ok", json.dumps(value), None
        except (TypeError, ValueError, RecursionError) as exc:
            return "exception", "null", f"the return value is not JSON: {type(exc).__name__}: {exc}"
    except MemoryError:
        reserve = None  # room to report
        return "memory", "null", f"MemoryError: over {request['memory_bytes'] >> 20} MiB"
    except BaseException as exc:  # noqa: BLE001 - SystemExit and friends are the code's failures too
        reserve = None
        return "exception", "null", _short_error(exc)
    finally:
        del reserve


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _limit_self(request: dict[str, Any]) -> None:
    """Every limit a call runs under, set afresh whatever the worker's own are."""
    memory, files = request["memory_bytes"], request["file_bytes"]
    limits = {
        resource.RLIMIT_AS: memory,
        resource.RLIMIT_CPU: request["cpu_s"],
        resource.RLIMIT_FSIZE: files,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: _MAX_FILES,
        resource.RLIMIT_MEMLOCK: 0,
        resource.RLIMIT_MSGQUEUE: 0,
        resource.RLIMIT_RTPRIO: 0,
    }
    for which, value in limits.items():
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU, then SIGKILL
        resource.setrlimit(which, (value, hard))


def run(
    request: dict[str, Any],
    work: str,
    pipes: tuple[int, int, int],
    readable: list[str] | None,
    die_with_worker: Callable[[], None],
) -> None:
    """Runs in the forked child: confine, call, answer on fd 3. Never returns."""
    out_w, err_w, answer_w = pipes
    die_with_worker()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails with EFBIG
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(answer_w, _ANSWER_FD)
    os.closerange(_ANSWER_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(work)
    os.environ.update(HOME=work, TMPDIR=work, TMP=work, TEMP=work)
    _limit_self(request)
    if readable is not None:  # isolated: this folder is on sys.path (see main)
        import landlock
        import seccomp

        seccomp.install(os.getpid())  # also sets no_new_privs, which Landlock needs
        landlock.restrict(readable=readable, writable=work)
    with contextlib.suppress(ValueError):
        sys.path.remove(_HERE)
    kind, value_json, error = call(request)
    head = json.dumps({"kind": kind, "error": error})[:-1]
    with contextlib.suppress(OSError):
        write_all(_ANSWER_FD, f'{head}, "value": {value_json}}}'.encode())
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()  # the candidate may have closed or replaced it

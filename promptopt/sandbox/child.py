"""The child side of the sandbox: the process that runs LLM-proposed code.

The parent (:mod:`promptopt.sandbox.runner`) starts this file as
``python -I -S -B child.py`` in a fresh process group, with a scrubbed
environment and a fresh work folder as cwd, HOME and TMPDIR. The child:

1. reads one JSON request from stdin: ``source``, ``function``, ``args``,
   ``kwargs``, ``work`` (the only folder it may write), ``result`` (the file it
   answers in), ``memory_bytes``, ``cpu_s``, ``file_bytes``;
2. limits itself: address space, CPU seconds, file size, no core files, no new
   processes (``RLIMIT_NPROC``; ignored for root);
3. opens the result file, replaces ``_posixsubprocess.fork_exec`` (the one
   spawning call Python does not audit), then installs an audit hook (which
   cannot be removed) that refuses writes outside the work folder, spawning
   processes, network sockets, ``ctypes``, signals to other processes and
   reads of other processes' ``/proc`` entries;
4. compiles the source (a ``SyntaxError`` answers kind ``invalid``), runs it,
   calls the function (awaiting it if it is a coroutine function) and writes
   ``{"kind", "error", "value"}`` as JSON into the result file; a value that is
   not JSON answers kind ``exception``, a ``MemoryError`` kind ``memory``.

This file imports only the standard library: under ``-I -S`` neither the
project nor site-packages are on ``sys.path``.

What the guard is, honestly: a fence against accidents and naive code, not a
security boundary against a determined attacker. Audit hooks see only what
Python reports: a C extension that opens files itself (``dbm``, third-party
wheels), a raw ``os.write`` on an inherited descriptor, calls Python does not
audit (``signal.pidfd_send_signal``), or code that digs the hook's captured
functions out of memory can get around it. What it does not try to stop:
reads of files outside the work folder (the standard library must load; only
other processes' ``/proc`` entries are refused), CPU and disk use inside the
limits, and a child running as root staying root. ``RLIMIT_NPROC`` is the
kernel's fork barrier only for non-root users, and for them it also forbids
threads. Under ``-S`` site-packages are not importable: candidate code gets
the standard library only. The next step for real isolation is the kernel's:
an unprivileged user namespace with a read-only bind mount, seccomp, or
Landlock.
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
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITABLE_DEVICES = frozenset({"/dev/null"})

# Events refused outright: spawning, signalling, foreign code, limits.
_REFUSED_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.kill",
        "os.killpg",
        "os.startfile",
        "pty.spawn",
        "subprocess.Popen",
        "signal.pthread_kill",
        "resource.setrlimit",
        "resource.prlimit",
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyname_ex",
        "socket.gethostbyaddr",
        "winreg.OpenKey",
    }
)
_REFUSED_PREFIXES = ("ctypes.",)
_FENCED_MODULES = frozenset({"_posixsubprocess"})  # patched before the guard; no fresh copies

# Events that change the file system: event name -> indexes of (path, dir_fd) pairs in args.
_PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),),
    "os.truncate": ((0, None),),
    "os.utime": ((0, 3),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "os.mkfifo": ((0, 2),),
    "os.mknod": ((0, 3),),
    "shutil.chown": ((0, None),),
}


def set_limits(*, memory_bytes: int, cpu_s: int, file_bytes: int) -> None:
    """Limit this process: address space, CPU time, file size, core files, new processes."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(ValueError, OSError):  # the audit hook still refuses spawning
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    # A write past RLIMIT_FSIZE then fails with EFBIG instead of killing the child.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def fence_fork_exec() -> None:
    """Replace ``_posixsubprocess.fork_exec``, the one spawning call Python does not audit.

    The module is imported now and its re-import is refused by the guard, so
    ``subprocess`` and ``multiprocessing`` only ever see the refusing stand-in.
    """
    try:
        import _posixsubprocess
    except ImportError:
        return

    def fork_exec(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("sandbox: '_posixsubprocess.fork_exec' is refused")

    _posixsubprocess.fork_exec = fork_exec  # type: ignore[attr-defined]


def make_guard(work: str) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook that keeps writes inside ``work`` and refuses spawning and network."""
    # Bind everything the hook calls now, so rebinding module attributes later cannot blind it.
    realpath, join, fspath, readlink = os.path.realpath, os.path.join, os.fspath, os.readlink
    getpid, af_unix = os.getpid, int(getattr(os, "AF_UNIX", 1))
    root = realpath(work)
    root_prefix = root.rstrip("/") + "/"
    own_proc = f"/proc/{getpid()}"
    busy: list[bool] = []  # re-entrancy flag: events raised while the hook itself runs

    def fd_path(fd: int) -> str | None:
        try:
            target = readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return target if target.startswith("/") else None  # pipes and sockets have no path

    def resolve(path: Any, dir_fd: Any) -> str | None:
        if isinstance(path, int):
            return fd_path(path)
        name = fspath(path)
        if isinstance(name, bytes):
            name = name.decode(sys.getfilesystemencoding(), "surrogateescape")
        if isinstance(dir_fd, int) and dir_fd >= 0 and not name.startswith("/"):
            base = fd_path(dir_fd)
            if base is None:
                return "<unknown directory>"
            name = join(base, name)
        return realpath(name)

    def inside(target: str) -> bool:
        return target == root or target.startswith(root_prefix) or target in _WRITABLE_DEVICES

    def refuse_write(path: Any, dir_fd: Any) -> None:
        target = resolve(path, dir_fd)
        if target is not None and not inside(target):
            raise PermissionError(f"sandbox: writing {target!r} outside {root!r} is refused")

    def check_read(path: Any) -> None:
        if isinstance(path, int):
            return
        target = resolve(path, None)
        if target is None or not target.startswith("/proc/"):
            return
        if target.split("/")[2].isdigit() and not (
            target == own_proc or target.startswith(own_proc + "/")
        ):
            raise PermissionError(f"sandbox: reading {target!r} is refused")

    def guard(event: str, args: tuple[Any, ...]) -> None:
        if busy:
            return
        busy.append(True)
        try:
            check(event, args)
        finally:
            busy.pop()

    def check(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return  # an fd that was itself opened through this hook, or stdio
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else False
            if writes or (isinstance(flags, int) and flags & _WRITE_FLAGS):
                refuse_write(path, None)
            else:
                check_read(path)
        elif event in _PATH_EVENTS:
            for path_at, fd_at in _PATH_EVENTS[event]:
                dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
                refuse_write(args[path_at], dir_fd)
        elif event == "sqlite3.connect":
            database = args[0]
            if fspath(database) not in (":memory:", b":memory:", ""):
                refuse_write(database, None)
        elif event == "import" and args[0] in _FENCED_MODULES:
            raise PermissionError(f"sandbox: importing {args[0]!r} again is refused")
        elif event == "socket.__new__":
            family = args[1] if len(args) > 1 else None
            if family != af_unix:
                raise PermissionError(f"sandbox: network sockets are refused ({event!r})")
        elif event in _REFUSED_EVENTS or event.startswith(_REFUSED_PREFIXES):
            raise PermissionError(f"sandbox: {event!r} is refused")

    return guard


def _short_error(exc: BaseException) -> str:
    """One line ``Type: message``, then the traceback without the child's own frames."""
    head = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    report = traceback.TracebackException.from_exception(exc, limit=-12)
    own = os.path.abspath(__file__)
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if os.path.abspath(frame.filename) != own]
    )
    text = head + "\n" + "".join(report.format()).rstrip()
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def call(request: dict[str, Any]) -> tuple[str, str, str | None]:
    """Compile, define and call; return ``(kind, value as JSON text, error)`` (never raises)."""
    source, function = request["source"], request["function"]
    try:
        code = compile(source, _SOURCE_NAME, "exec")
    except (SyntaxError, ValueError) as exc:
        return "invalid", "null", _short_error(exc)
    linecache.cache[_SOURCE_NAME] = (len(source), None, source.splitlines(True), _SOURCE_NAME)
    reserve: bytearray | None = bytearray(_RESERVE_BYTES)
    memory_hit = False
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
        reserve = None  # room to report; the exception's frames go when this block ends
        memory_hit = True
    except BaseException as exc:  # noqa: BLE001 - SystemExit and friends are the user's failures too
        reserve = None
        return "exception", "null", _short_error(exc)
    finally:
        del reserve
    assert memory_hit
    return "memory", "null", f"MemoryError: over {request['memory_bytes'] >> 20} MiB"


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def write_answer(fd: int, kind: str, value_json: str, error: str | None, *, limit: int) -> None:
    """Write ``{"kind", "error", "value"}`` to ``fd`` without another copy of a large value."""
    if len(value_json) > limit // 4:  # a UTF-8 character takes up to 4 bytes
        error = f"the return value's JSON is {len(value_json)} characters, over {limit // 4}"
        kind, value_json = "exception", "null"
    head = f'{{"kind": {json.dumps(kind)}, "error": {json.dumps(error)}, "value": '
    for piece in (head, *_chunks(value_json), "}"):
        view = memoryview(piece.encode("utf-8"))
        while view:
            view = view[os.write(fd, view) :]


def _chunks(text: str, size: int = 1 << 20) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    set_limits(
        memory_bytes=request["memory_bytes"],
        cpu_s=request["cpu_s"],
        file_bytes=request["file_bytes"],
    )
    result_fd = os.open(request["result"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.chdir(request["work"])
    fence_fork_exec()
    sys.addaudithook(make_guard(request["work"]))
    kind, value_json, error = call(request)
    write_answer(result_fd, kind, value_json, error, limit=request["file_bytes"])
    os.close(result_fd)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()  # the candidate may have closed or replaced it


if __name__ == "__main__":
    main()

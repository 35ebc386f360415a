"""The sandbox's worker: a warm process that forks one limited child per call of proposed code.

The parent (:mod:`promptopt.sandbox.runner`) starts this file once per
:class:`~promptopt.sandbox.Sandbox`, as ``python -I -S -B worker.py MODE ROOT``:
inside bubblewrap's fresh namespaces when ``MODE`` is ``isolated``, as a plain
child when it is ``none``. It talks JSON lines: requests on stdin
(``{"id", "source", "function", "args", "kwargs", "timeout_s", "memory_bytes",
"cpu_s", "file_bytes", "max_result_bytes"}``, or ``{"cancel": id}``), answers on
stdout (``{"id", "answer", "timed_out", "oversize", "returncode", "stdout",
"stderr", "duration_s"}``). Its first line is ``{"ready": true}``; it ends, and
kills its children, when stdin closes.

Each call runs in a child forked from this warm interpreter (a fork costs about
a millisecond; a fresh interpreter about 30). Before the candidate's source is
compiled, the child:

1. keeps only its own three pipes (stdout, stderr, the answer pipe); stdin is
   ``/dev/null``; the worker's own channel to the parent is closed;
2. moves into a fresh work folder under ``ROOT`` (also ``HOME`` and ``TMPDIR``)
   and a session of its own;
3. limits itself: address space, CPU seconds, file size, no core files;
4. in ``isolated`` mode, installs the seccomp filter of
   :mod:`promptopt.sandbox.seccomp` (no network sockets, no new processes, no
   exec, no ptrace, signals to itself only), then the Landlock rules of
   :mod:`promptopt.sandbox.landlock` (write only its own folder, read no
   other call's).

The answer, ``{"kind", "error", "value"}``, goes on the answer pipe, which the
worker reads up to ``max_result_bytes`` (killing a child that writes more) and
hands to the parent as text; the parent validates it. Nothing here is trusted
for security: the boundary is the namespaces, the read-only file system and
seccomp around this whole process tree. The worker process itself is made
non-dumpable, so its children cannot inspect it. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import linecache
import os
import resource
import selectors
import shutil
import signal
import sys
import time
import traceback
from typing import Any

_SOURCE_NAME = "<candidate>"
_RESERVE_BYTES = 1 << 20
_MAX_ERROR_CHARS = 2000
_TAIL_BYTES = 8192
_ANSWER_FD = 3
_PR_SET_DUMPABLE = 4
_HERE = os.path.dirname(os.path.abspath(__file__))


def _short_error(exc: BaseException) -> str:
    """One line ``Type: message``, then the traceback without the worker's own frames."""
    head = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    report = traceback.TracebackException.from_exception(exc, limit=-12)
    own = os.path.abspath(__file__)
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if os.path.abspath(frame.filename) != own]
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child(
    request: dict[str, Any], work: str, pipes: tuple[int, int, int], readable: list[str] | None
) -> None:
    """Runs in the forked child: confine, call, answer on fd 3. Never returns."""
    out_w, err_w, answer_w = pipes
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
    memory = request["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (request["cpu_s"], request["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_bytes"], request["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if readable is not None:  # isolated: this folder is on sys.path (see main)
        import landlock  # type: ignore[import-not-found]
        import seccomp  # type: ignore[import-not-found]

        seccomp.install(os.getpid())  # also sets no_new_privs, which Landlock needs
        landlock.restrict(readable=readable, writable=work)
    with contextlib.suppress(ValueError):
        sys.path.remove(_HERE)
    kind, value_json, error = call(request)
    head = json.dumps({"kind": kind, "error": error})[:-1]
    with contextlib.suppress(OSError):
        _write_all(_ANSWER_FD, f'{head}, "value": {value_json}}}'.encode())
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()  # the candidate may have closed or replaced it


class _Call:
    """One forked child and what it has written so far."""

    def __init__(self, request: dict[str, Any], pid: int, work: str, started: float) -> None:
        self.id = request["id"]
        self.pid = pid
        self.work = work
        self.started = started
        self.deadline = started + float(request["timeout_s"])
        self.limit = int(request["max_result_bytes"])
        self.buffers = {"stdout": bytearray(), "stderr": bytearray(), "answer": bytearray()}
        self.fds: dict[int, str] = {}
        self.timed_out = False
        self.oversize = False
        self.cancelled = False
        self.status: int | None = None


class Worker:
    """The fork server: one select loop over the request channel and every child's pipes."""

    def __init__(self, *, isolated: bool, root: str) -> None:
        self.root = root
        # isolated: what a call may read (every top-level folder but the shared writable ones)
        self.readable = (
            sorted(f"/{name}" for name in os.listdir("/") if f"/{name}" not in (root, "/tmp"))
            if isolated
            else None
        )
        self.selector = selectors.DefaultSelector()
        self.calls: dict[int, _Call] = {}
        self.inbox = bytearray()
        self.open = True
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake_r = wake_r
        self.selector.register(0, selectors.EVENT_READ, None)
        self.selector.register(wake_r, selectors.EVENT_READ, None)

    def send(self, message: dict[str, Any]) -> None:
        _write_all(1, json.dumps(message).encode() + b"\n")

    def serve(self) -> None:
        self.send({"ready": True})
        while self.open or self.calls:
            now = time.monotonic()
            for job in self.calls.values():
                if job.status is None and not job.timed_out and now >= job.deadline:
                    job.timed_out = True
                    self.kill(job)
            waits = [j.deadline - now for j in self.calls.values() if not j.timed_out]
            for key, _ in self.selector.select(max(0.0, min(waits)) if waits else None):
                self.on_readable(key.fd)
            self.reap()
        for job in list(self.calls.values()):
            self.kill(job)

    def on_readable(self, fd: int) -> None:
        if fd == self.wake_r:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 4096)
            return
        if fd == 0:
            chunk = os.read(0, 1 << 16)
            if not chunk:  # the parent is gone: end every call
                self.open = False
                self.selector.unregister(0)
                for job in self.calls.values():
                    job.cancelled = True
                    self.kill(job)
                return
            self.inbox += chunk
            while b"\n" in self.inbox:
                line, _, rest = self.inbox.partition(b"\n")
                self.inbox = bytearray(rest)
                self.handle(json.loads(line))
            return
        job = next(j for j in self.calls.values() if fd in j.fds)
        self.drain(job, fd)

    def drain(self, job: _Call, fd: int) -> None:
        """Read what ``fd`` holds now; close it at its end."""
        name = job.fds[fd]
        buffer = job.buffers[name]
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                self.selector.unregister(fd)
                os.close(fd)
                del job.fds[fd]
                return
            buffer += chunk
            if name == "answer" and len(buffer) > job.limit:
                job.oversize = True
                self.kill(job)
                del buffer[:]
            elif name != "answer" and len(buffer) > 2 * _TAIL_BYTES:
                del buffer[:-_TAIL_BYTES]

    def handle(self, request: dict[str, Any]) -> None:
        if "cancel" in request:
            for job in self.calls.values():
                if job.id == request["cancel"]:
                    job.cancelled = True
                    self.kill(job)
            return
        work = os.path.join(self.root, f"call-{request['id']}")
        os.mkdir(work, 0o700)
        pipes = [os.pipe() for _ in range(3)]
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                _child(request, work, (pipes[0][1], pipes[1][1], pipes[2][1]), self.readable)
            except BaseException:  # noqa: BLE001 - the child must never return into the loop
                traceback.print_exc()
                status = 70
            finally:
                os._exit(status)
        job = _Call(request, pid, work, started)
        for (read_end, write_end), name in zip(pipes, ("stdout", "stderr", "answer"), strict=True):
            os.close(write_end)
            os.set_blocking(read_end, False)
            job.fds[read_end] = name
            self.selector.register(read_end, selectors.EVENT_READ, None)
        self.calls[pid] = job

    def kill(self, job: _Call) -> None:
        if job.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)

    def reap(self) -> None:
        while self.calls:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.calls.pop(pid, None)
            if job is not None:
                job.status = status
                self.finish(job, time.monotonic())

    def finish(self, job: _Call, ended: float) -> None:
        for fd in list(job.fds):
            self.drain(job, fd)  # the child is gone: what is left is all there is
            if fd in job.fds:
                self.selector.unregister(fd)
                os.close(fd)
        shutil.rmtree(job.work, ignore_errors=True)
        if job.cancelled:
            return
        assert job.status is not None
        self.send(
            {
                "id": job.id,
                "answer": None
                if job.oversize
                else job.buffers["answer"].decode("utf-8", "replace"),
                "timed_out": job.timed_out,
                "oversize": job.oversize,
                "returncode": os.waitstatus_to_exitcode(job.status),
                "stdout": bytes(job.buffers["stdout"][-_TAIL_BYTES:]).decode("utf-8", "replace"),
                "stderr": bytes(job.buffers["stderr"][-_TAIL_BYTES:]).decode("utf-8", "replace"),
                "duration_s": ended - job.started,
            }
        )


def _not_dumpable() -> None:
    """Keep the children (same user) from reading this process's memory or descriptors."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def main() -> None:
    mode, root = sys.argv[1], sys.argv[2]
    isolated = mode == "isolated"
    if isolated:
        sys.path.insert(0, _HERE)
        import landlock  # noqa: F401 - imported once here, so each child only applies them
        import seccomp  # noqa: F401

        _not_dumpable()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        Worker(isolated=isolated, root=root).serve()
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise


if __name__ == "__main__":
    main()

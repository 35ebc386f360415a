"""The sandbox's worker: a warm process that forks one limited child per call of proposed code.

The parent (:mod:`promptopt.sandbox.runner`) starts this file once per
:class:`~promptopt.sandbox.Sandbox`, as ``python -I -S -B worker.py MODE ROOT
SLOTS``: inside bubblewrap's fresh namespaces when ``MODE`` is ``isolated``, as
a plain child when it is ``none``. It talks JSON lines: requests on stdin
(``{"id", "source", "function", "args", "kwargs", "timeout_s", "memory_bytes",
"cpu_s", "file_bytes", "max_result_bytes"}``, or ``{"cancel": id}``), answers on
stdout (``{"id", "answer", "timed_out", "oversize", "malformed", "returncode",
"stdout", "stderr", "duration_s"}``; ``{"id", "queued": true}`` when a call
waits for a free slot and ``{"id", "started": true}`` when it leaves the
queue). Its first line is ``{"ready": true}``; it ends, and kills its
children, when stdin closes.

Each call runs in a child forked from this warm interpreter (a fork costs about
a millisecond; a fresh interpreter about 30), at most ``SLOTS`` at once. Before
the candidate's source is compiled, the child:

1. asks for SIGKILL when the worker ends, and zeroes the worker's buffers of
   the other calls in flight (their output, queued requests);
2. keeps only its own three pipes (stdout, stderr, the answer pipe); stdin is
   ``/dev/null``; the worker's own channel to the parent is closed;
3. moves into a fresh work folder in its slot (also ``HOME`` and ``TMPDIR``;
   isolated, each slot is a tmpfs of its own, ``file_bytes`` in size) and a
   session of its own;
4. sets every limit afresh: address space, CPU seconds, file size, 64
   descriptors, no locked memory, no message queues, no core files;
5. in ``isolated`` mode, installs the seccomp filter of
   :mod:`promptopt.sandbox.seccomp` (no network sockets, no new tasks, no
   exec, no ptrace, no shared memory, no process named but itself), then the
   Landlock rules of :mod:`promptopt.sandbox.landlock` (write only its own
   folder, read no other call's, signal nothing outside itself).

The answer, ``{"kind", "error", "value"}``, goes on the answer pipe, which the
worker reads up to ``max_result_bytes`` (killing a child that writes more) and
hands to the parent as text only when it is printable ASCII, as the child's
``json.dumps`` writes it; the parent validates it. When a child ends, its
process group is killed (opted out, the code may have forked) and its folder
removed. Nothing here is trusted for security: the boundary is the namespaces,
the read-only file system, seccomp and Landlock around this whole process
tree. The worker process itself is made non-dumpable, so its children cannot
inspect it. Standard library only.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import json
import os
import selectors
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

_TAIL_BYTES = 8192
_PR_SET_DUMPABLE, _PR_SET_PDEATHSIG = 4, 1
_MAX_FILES_MADE = 4096  # files, folders and links a call may make (isolated; about 4 MiB of inodes)
_FILES_CHECK_S = 0.05  # how often the worker counts them while calls run
_PRINTABLE = bytes(range(0x20, 0x7F))  # what an honest answer (JSON, ensure_ascii) is made of
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # the child's side, and (isolated) seccomp and landlock, import from here
import child  # noqa: E402 - after the path; this file runs as a script


def _wipe(buffer: bytearray, keep: int = 0) -> None:
    """Overwrite ``buffer`` with zeros in place, keeping only its last ``keep`` bytes."""
    tail = bytes(buffer[-keep:]) if keep else b""
    buffer[:] = bytes(len(buffer))
    buffer[:] = tail


def _remove(folder: str) -> None:
    """Remove a call's folder whole, even where the code took the permissions away."""
    stack = [folder]
    while stack:
        path = stack.pop()
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)  # the worker's own user made it: allowed
            with os.scandir(path) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    shutil.rmtree(folder, ignore_errors=True)


class _Call:
    """One forked child and what it has written so far."""

    def __init__(
        self, request: dict[str, Any], pid: int, work: str, slot: int, started: float
    ) -> None:
        self.id = request["id"]
        self.pid = pid
        self.work = work
        self.slot = slot
        self.started = started
        self.deadline = started + float(request["timeout_s"])
        self.limit = int(request["max_result_bytes"])
        self.buffers = {"stdout": bytearray(), "stderr": bytearray(), "answer": bytearray()}
        self.fds: dict[int, str] = {}
        self.timed_out = False
        self.oversize = False
        self.too_many_files = False
        self.cancelled = False
        self.status: int | None = None


class Worker:
    """The fork server: one select loop over the request channel and every child's pipes.

    At most ``slots`` children run at once, each in a folder of its own slot
    (``ROOT/s<n>``: in ``isolated`` mode a tmpfs of its own, so one call's files
    can neither fill another's nor outlive its call); requests beyond that wait
    in order, and the parent is told when such a call is queued and when it starts.
    """

    def __init__(self, *, isolated: bool, root: str, slots: int) -> None:
        self.root = root
        self.isolated = isolated
        self.files_counted = 0.0
        # isolated: what a call may read (every top-level folder but the shared writable ones)
        self.readable = (
            sorted(f"/{name}" for name in os.listdir("/") if f"/{name}" not in (root, "/tmp"))
            if isolated
            else None
        )
        self.free_slots = list(range(slots))
        for slot in self.free_slots:
            os.makedirs(self.slot_folder(slot), mode=0o700, exist_ok=True)
        self.backlog: collections.deque[dict[str, Any]] = collections.deque()
        self.scratch = bytearray(1 << 16)
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
        self.die_with_worker = _death_signal(os.getpid())
        self.selector.register(0, selectors.EVENT_READ, None)
        self.selector.register(wake_r, selectors.EVENT_READ, None)

    def slot_folder(self, slot: int) -> str:
        return os.path.join(self.root, f"s{slot}")

    def send(self, message: dict[str, Any]) -> None:
        child.write_all(1, json.dumps(message).encode() + b"\n")

    def serve(self) -> None:
        self.send({"ready": True})
        while self.open or self.calls:
            now = time.monotonic()
            for job in self.calls.values():
                if job.status is None and not job.timed_out and now >= job.deadline:
                    job.timed_out = True
                    self.kill(job)
            self.count_files()
            waits = [j.deadline - now for j in self.calls.values() if not j.timed_out]
            if self.isolated and self.calls:
                waits.append(_FILES_CHECK_S)
            for key, _ in self.selector.select(max(0.0, min(waits)) if waits else None):
                self.on_readable(key.fd)
            self.reap()
        for job in list(self.calls.values()):
            self.kill(job)

    def count_files(self) -> None:
        """Isolated, kill a call whose tmpfs holds more than ``_MAX_FILES_MADE`` inodes.

        A tmpfs caps the bytes of its files, not their number, and each empty
        file or folder still costs the kernel about a KiB; every slot is a
        tmpfs of its own, so its inode count is the call's alone.
        """
        now = time.monotonic()
        if not self.isolated or now - self.files_counted < _FILES_CHECK_S:
            return
        self.files_counted = now
        for job in self.calls.values():
            if job.status is not None or job.too_many_files:
                continue
            with contextlib.suppress(OSError):
                stats = os.statvfs(self.slot_folder(job.slot))
                if stats.f_files - stats.f_ffree > _MAX_FILES_MADE + 2:  # its root, its folder
                    job.too_many_files = True
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
                self.backlog.clear()
                for job in self.calls.values():
                    job.cancelled = True
                    self.kill(job)
                return
            self.inbox += chunk
            while b"\n" in self.inbox:
                at = self.inbox.index(b"\n")
                line = bytes(self.inbox[:at])
                self.inbox[: at + 1] = bytes(at + 1)  # zeroed, then dropped
                del self.inbox[: at + 1]
                self.handle(json.loads(line))
            return
        job = next(j for j in self.calls.values() if fd in j.fds)
        self.drain(job, fd)

    def drain(self, job: _Call, fd: int) -> None:
        """Read what ``fd`` holds now; close it at its end."""
        name = job.fds[fd]
        buffer = job.buffers[name]
        scratch = self.scratch
        while True:
            try:
                size = os.readv(fd, [scratch])
            except BlockingIOError:
                return
            if not size:
                self.selector.unregister(fd)
                os.close(fd)
                del job.fds[fd]
                return
            buffer += memoryview(scratch)[:size]
            scratch[:size] = bytes(size)
            if name == "answer" and len(buffer) > job.limit:
                job.oversize = True
                self.kill(job)
                _wipe(buffer)
            elif name != "answer" and len(buffer) > 2 * _TAIL_BYTES:
                _wipe(buffer, keep=_TAIL_BYTES)

    def handle(self, request: dict[str, Any]) -> None:
        if "cancel" in request:
            for queued in [r for r in self.backlog if r["id"] == request["cancel"]]:
                self.backlog.remove(queued)
            for job in self.calls.values():
                if job.id == request["cancel"]:
                    job.cancelled = True
                    self.kill(job)
            return
        if not self.free_slots:
            self.backlog.append(request)
            self.send({"id": request["id"], "queued": True})
            return
        self.start(request, queued=False)

    def start(self, request: dict[str, Any], *, queued: bool) -> None:
        slot = self.free_slots.pop()
        work = os.path.join(self.slot_folder(slot), f"call-{request['id']}")
        os.mkdir(work, 0o700)
        pipes = [os.pipe() for _ in range(3)]
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                self.forget()
                ends = (pipes[0][1], pipes[1][1], pipes[2][1])
                child.run(request, work, ends, self.readable, self.die_with_worker)
            except BaseException:  # noqa: BLE001 - the child must never return into the loop
                traceback.print_exc()
                status = 70
            finally:
                os._exit(status)
        job = _Call(request, pid, work, slot, started)
        for (read_end, write_end), name in zip(pipes, ("stdout", "stderr", "answer"), strict=True):
            os.close(write_end)
            os.set_blocking(read_end, False)
            job.fds[read_end] = name
            self.selector.register(read_end, selectors.EVENT_READ, None)
        self.calls[pid] = job
        if queued:
            self.send({"id": job.id, "started": True})

    def forget(self) -> None:
        """In a new child: zero what the worker holds of the other calls before any code runs."""
        for job in self.calls.values():
            for buffer in job.buffers.values():
                _wipe(buffer)
        _wipe(self.inbox)
        _wipe(self.scratch)
        self.calls.clear()
        self.backlog.clear()

    def kill(self, job: _Call) -> None:
        """SIGKILL the call's child and whatever it left in its process group."""
        if job.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL)  # the child leads its own session and group

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
        self.kill(job)  # opted out, the code may have forked: its group goes with it
        for fd in list(job.fds):
            self.drain(job, fd)  # the child is gone: what is left is all there is
            if fd in job.fds:
                self.selector.unregister(fd)
                os.close(fd)
        _remove(job.work)
        self.free_slots.append(job.slot)
        if not job.cancelled:
            self.answer(job, ended)
        for buffer in job.buffers.values():
            _wipe(buffer)
        while self.free_slots and self.backlog and self.open:
            self.start(self.backlog.popleft(), queued=True)

    def answer(self, job: _Call, ended: float) -> None:
        assert job.status is not None
        answer = job.buffers["answer"]
        malformed = bool(answer.translate(None, _PRINTABLE)) and not job.oversize
        self.send(
            {
                "id": job.id,
                "answer": None if job.oversize or malformed else answer.decode("ascii"),
                "timed_out": job.timed_out,
                "oversize": job.oversize,
                "malformed": malformed,
                "too_many_files": job.too_many_files,
                "returncode": os.waitstatus_to_exitcode(job.status),
                "stdout": bytes(job.buffers["stdout"][-_TAIL_BYTES:]).decode("utf-8", "replace"),
                "stderr": bytes(job.buffers["stderr"][-_TAIL_BYTES:]).decode("utf-8", "replace"),
                "duration_s": ended - job.started,
            }
        )


@functools.cache
def _prctl() -> Callable[[int, int], None]:
    """``prctl(option, value)``, raising ``OSError`` when the kernel refuses (ctypes loaded once)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]

    def prctl(option: int, value: int) -> None:
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")

    return prctl


def _not_dumpable() -> None:
    """Keep the children (same user) from reading this process's memory or descriptors."""
    _prctl()(_PR_SET_DUMPABLE, 0)


def _death_signal(worker_pid: int) -> Callable[[], None]:
    """A function a child calls first: it gets SIGKILL when the worker ends, however it ends."""
    prctl = _prctl()

    def die_with_worker() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:  # the worker ended before the prctl
            os._exit(70)

    return die_with_worker


def main() -> None:
    mode, root, slots = sys.argv[1], sys.argv[2], int(sys.argv[3])
    isolated = mode == "isolated"
    if isolated:
        import landlock  # noqa: F401 - imported once here, so each child only applies them
        import seccomp  # noqa: F401

        _not_dumpable()
    else:  # isolated, bubblewrap's --die-with-parent and the namespace's init do this
        _prctl()(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        Worker(isolated=isolated, root=root, slots=slots).serve()
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise


if __name__ == "__main__":
    main()

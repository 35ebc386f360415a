"""One call cannot touch the others, the worker, the run or the machine.

Each test plays one attack seen against the sandbox from proposed code alone
(memory past ``memory_mb``, signals and limits aimed at other processes,
thread floods, a forged answer, reading another call's output, a grandchild
left behind), while honest calls of the same sandbox run beside it and after
it. Each attack ends as a failed call; every honest call returns its correct
answer; and after ``close()`` no process and no folder of the sandbox is left
(``gone_after_close``). The isolated ones run wherever bubblewrap works (CI
installs it: ``test_escapes.test_ci_has_isolation``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptopt.sandbox import Sandbox, SandboxResult
from promptopt.sandbox.isolation import isolation_problem

PROBLEM = isolation_problem()
isolated = pytest.mark.skipif(PROBLEM is not None, reason=f"no isolation here: {PROBLEM}")

HONEST = """
import os
def f(x):
    with open("scratch.txt", "w") as out:  # its own folder works, whatever the others did
        out.write(str(x))
    data = bytearray(16 << 20)  # 16 MiB of the call's own memory
    return int(open("scratch.txt").read()) * 2 + len(data) // (16 << 20) - 1
"""
SLOW_HONEST = """
import time
def f(x):
    print("MARK-" + str(x), flush=True)
    time.sleep(1.0)
    return x * 2
"""


def hostile(body: str) -> str:
    """``def f(): <body>`` with the modules the attacks use."""
    return "import os, sys, ctypes, signal, fcntl, resource\ndef f():\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "    "
    )


def honest_ok(result: SandboxResult, x: int) -> None:
    assert result.ok and result.value == 2 * x, result


def failed(result: SandboxResult) -> None:
    assert not result.ok and result.kind != "ok" and result.error, result


def tree(root: int) -> dict[int, str]:
    """``root`` and every process below it, with their start times (pid reuse aside)."""
    parent_of: dict[int, int] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parent_of[int(entry.name)] = int(fields[1])
        started[int(entry.name)] = fields[19]
    members = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parent_of.items():
            if parent in members and pid not in members:
                members.add(pid)
                grew = True
    return {pid: started[pid] for pid in members if pid in started}


def alive(processes: dict[int, str]) -> list[int]:
    """Those still running: same start time and not a zombie."""
    left = []
    for pid, start in processes.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        state, fields = stat.rsplit(")", 1)[1].split()[0], stat.rsplit(")", 1)[1].split()
        if state != "Z" and fields[19] == start:
            left.append(pid)
    return left


def wait_until_gone(processes: dict[int, str], within_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def gone_after_close(box: Sandbox) -> None:
    """Close the sandbox: none of its processes remain, and it made no folder on the host."""
    worker = box._worker
    assert worker is not None and box._folder is None  # isolated: files only on its own tmpfs
    processes = tree(worker.pid)
    assert len(processes) >= 3  # bubblewrap, the namespace's init, the worker
    box.close()
    assert wait_until_gone(processes) == []


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox(timeout_s=10, memory_mb=256) as sandbox:
        yield sandbox


async def beside(box: Sandbox, attack: str, *, error: str = "", honest: int = 4) -> SandboxResult:
    """Run ``attack`` while slow honest calls are in flight, then honest calls after it.

    The attack must fail (with an error that starts with ``error``); every
    honest call must return its correct answer.
    """
    before = [asyncio.create_task(box.arun(SLOW_HONEST, "f", [i])) for i in range(honest)]
    await asyncio.sleep(0.3)
    result = await box.arun(attack, "f")
    failed(result)
    assert (result.error or "").startswith(error), result.error
    for i, task in enumerate(before):
        honest_ok(await task, i)
    after = await asyncio.gather(*(box.arun(HONEST, "f", [i]) for i in range(honest)))
    for i, later in enumerate(after):
        honest_ok(later, i)
    return result


# 1. RAM beyond memory_mb: memfd, SysV shared memory and semaphores, POSIX queues, files.
MEMFD = """
held = []
for _ in range(22):
    fd = os.memfd_create("hoard")
    os.ftruncate(fd, 48 << 20)
    os.pwrite(fd, b"x" * (1 << 20), 0)
    held.append(fd)
return len(held)
"""
SYSV = """
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
made = []
for _ in range(48):
    segment = libc.shmget(0, 16 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    if segment < 0:
        raise OSError(ctypes.get_errno(), "shmget refused")
    made.append(segment)
return made
"""
SEMAPHORES = """
libc = ctypes.CDLL(None, use_errno=True)
for call, args in (("semget", (0, 4, 0o1600)), ("msgget", (0, 0o1600))):
    if getattr(libc, call)(*args) >= 0:
        return call + " made an object that would outlive the call"
if libc.syscall(240, b"/q", 0o100 | 2, 0o600, None) >= 0:  # mq_open
    return "mq_open made a queue"
raise OSError(ctypes.get_errno(), "no IPC object can be made")
"""
FILES = """
for i in range(64):
    with open(f"fill-{i}", "wb") as out:
        out.write(b"x" * (4 << 20))
return "wrote 256 MiB of files"
"""
INODES = """
for i in range(200_000):
    open(f"empty-{i}", "w").close()  # no bytes, but a kernel inode and dentry each
return "made 200000 files"
"""
BUFFERS = """
import socket
held = []
for _ in range(30):  # 60 descriptors: under the 64 a call may hold
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)  # 8 MiB of kernel memory each
    a.setblocking(False)
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        held.append((a, b))
return len(held)
"""
DESCRIPTORS = """
held = [os.pipe() for _ in range(1000)]
return len(held)
"""
WHY = {
    "socket-buffers": "PermissionError",
    "descriptors": "OSError: [Errno 24] Too many open files",
    "memfd": "PermissionError",
    "sysv-shm": "PermissionError",
    "sem-msg-mq": "PermissionError",
    "tmpfs-files": "No space left on device",
    "tmpfs-inodes": "more files than the sandbox allows",
}


@isolated
@pytest.mark.parametrize(
    ("attack", "name"),
    [
        pytest.param(attack, name, id=name)
        for attack, name in [
            (MEMFD, "memfd"),
            (SYSV, "sysv-shm"),
            (SEMAPHORES, "sem-msg-mq"),
            (FILES, "tmpfs-files"),
            (INODES, "tmpfs-inodes"),
            (BUFFERS, "socket-buffers"),
            (DESCRIPTORS, "descriptors"),
        ]
    ],
)
async def test_memory_outside_the_address_space_limit_is_refused(attack: str, name: str) -> None:
    with Sandbox(timeout_s=10, memory_mb=64) as small:
        result = await beside(small, hostile(attack))
        assert result.kind in ("exception", "memory"), result
        assert WHY[name] in (result.error or ""), result.error
        gone_after_close(small)


@isolated
def test_files_behind_a_locked_folder_do_not_fill_a_later_call() -> None:
    """The folder goes whole after each call: the slot's next call has all its room."""
    with Sandbox(timeout_s=10, memory_mb=64) as box:  # each call: 8 MiB of files
        hide = hostile("""
            os.mkdir("locked")
            with open("locked/big", "wb") as out:
                out.write(b"x" * (6 << 20))
            os.chmod("locked", 0)
            raise PermissionError("left 6 MiB behind a folder nobody may open")
        """)
        fill = "def f():\n    open('big', 'wb').write(b'x' * (6 << 20))\n    return 1\n"
        for _ in range(3):
            failed(box.run(hide, "f"))
            after = box.run(fill, "f")  # the same slot: the last one freed is taken first
            assert after.ok, after
        gone_after_close(box)


@isolated
def test_a_call_cannot_leave_anything_for_the_next() -> None:
    """The old SysV marker: nothing one call makes is there for a later call to read."""
    with Sandbox(timeout_s=10, memory_mb=64) as box:
        leave = hostile("""
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.shmget(0x5EED, 4096, 0o1600) < 0:
                raise OSError(ctypes.get_errno(), "shmget refused")
            open("/tmp/marker", "w").write("left")
        """)
        failed(box.run(leave, "f"))
        look = hostile("""
            libc = ctypes.CDLL(None, use_errno=True)
            found = [libc.shmget(0x5EED, 0, 0), os.listdir(".")]
            for folder in ("/work", "/tmp"):
                try:
                    found.append(os.listdir(folder))
                except OSError as exc:
                    found.append(type(exc).__name__)
            return found
        """)
        seen = box.run(look, "f")
        assert seen.ok and seen.value == [-1, [], "PermissionError", "PermissionError"], seen
        gone_after_close(box)


# 2. Signals to other calls and to the worker, however they are sent.
SIGNALS = """
refused = []
r, w = os.pipe()
for pid in range(1, 64):
    if pid == os.getpid():
        continue
    for attempt in (
        lambda: os.kill(pid, signal.SIGKILL),
        lambda: os.kill(pid, signal.SIGSTOP),
        lambda: os.kill(-pid, signal.SIGKILL),
        lambda: fcntl.fcntl(r, fcntl.F_SETOWN, pid),
        lambda: fcntl.fcntl(r, fcntl.F_SETOWN, -pid),
    ):
        try:
            attempt()
        except (OSError, ProcessLookupError):
            refused.append(pid)
for call in (lambda: fcntl.fcntl(r, 10, signal.SIGKILL),  # F_SETSIG
             lambda: fcntl.ioctl(r, 0x8901, b"\\x02\\x00\\x00\\x00"),  # FIOSETOWN
             lambda: fcntl.ioctl(r, 0x8902, b"\\x02\\x00\\x00\\x00")):  # SIOCSPGRP
    try:
        call()
        return "an owner for SIGIO was set"
    except OSError:
        pass
fcntl.fcntl(w, fcntl.F_SETFL, os.O_ASYNC)
os.write(w, b"wake")  # no owner: nobody is signalled
raise PermissionError(f"refused {len(refused)} attempts on other processes")
"""


@isolated
async def test_no_signal_reaches_another_call_or_the_worker(box: Sandbox) -> None:
    await beside(box, hostile(SIGNALS), error="PermissionError: refused")
    gone_after_close(box)


# 3. Limits, priorities and affinities of other processes.
LIMITS = """
libc = ctypes.CDLL(None, use_errno=True)
refused = 0
limit = (ctypes.c_ulong * 2)(40 << 20, 40 << 20)
for pid in range(1, 64):
    if pid == os.getpid():
        continue
    for name, call in (
        ("prlimit-data", lambda: libc.prlimit(pid, resource.RLIMIT_DATA, limit, None)),
        ("prlimit-as", lambda: libc.prlimit(pid, resource.RLIMIT_AS, limit, None)),
        ("setpriority", lambda: libc.setpriority(0, pid, 19)),
        ("affinity", lambda: libc.sched_setaffinity(pid, 8, ctypes.byref(ctypes.c_ulong(1)))),
        ("scheduler", lambda: libc.sched_setscheduler(pid, 5, ctypes.byref(ctypes.c_int(0)))),
        ("ioprio", lambda: libc.syscall(251, 1, pid, 7)),
    ):
        if call() == 0:
            return f"{name} worked on pid {pid}"
        refused += 1
for which, who in ((1, 0), (2, 0), (2, os.getuid())):  # a process group, a user
    if libc.setpriority(which, who, 19) == 0 or libc.syscall(251, which + 1, who, 7) == 0:
        return f"priority of group/user {which} {who} changed"
os.setpriority(os.PRIO_PROCESS, 0, 5)  # its own, by 0 ...
os.sched_setaffinity(os.getpid(), os.sched_getaffinity(0))  # ... or by its pid: allowed
raise PermissionError(f"refused {refused} attempts on other processes")
"""


@isolated
async def test_no_limit_or_priority_of_another_process_can_be_changed(box: Sandbox) -> None:
    await beside(box, hostile(LIMITS), error="PermissionError: refused")
    big = box.run("def f():\n    return len(bytearray(100 << 20))\n", "f")
    assert big.ok and big.value == 100 << 20, big  # the worker's limits are untouched
    gone_after_close(box)


# 4. Tasks: threads by the library and by raw clone.
THREADS = """
import threading
stack = ctypes.create_string_buffer(1 << 16)
libc = ctypes.CDLL(None, use_errno=True)
flags = 0x00010000 | 0x00000100 | 0x00000800 | 0x00000400  # THREAD, VM, SIGHAND, FILES
for _ in range(3000):
    if libc.syscall(56, flags, ctypes.addressof(stack) + (1 << 16), None, None, 0) < 0:
        break
else:
    return "3000 raw clones"
for _ in range(3000):
    threading.Thread(target=lambda: None).start()
return "3000 threads"
"""


@isolated
async def test_a_call_is_one_task(box: Sandbox) -> None:
    result = await beside(box, hostile(THREADS))
    assert "can't start new thread" in (result.error or ""), result.error
    worker = box._worker
    assert worker is not None and len(tree(worker.pid)) <= 4  # bwrap, init, worker (no call left)
    gone_after_close(box)


# 5. The answer channel: a flood of control bytes, a forged answer nested past any parser.
FLOOD = """
os.write(3, b"\\x01" * 1_000_000)
os._exit(0)
"""
NESTED = """
depth = 200_000
os.write(3, b'{"kind": "ok", "error": null, "value": ' + b"[" * depth + b"]" * depth + b"}")
os._exit(0)
"""


@isolated
@pytest.mark.parametrize("attack", [FLOOD, NESTED], ids=["control-bytes", "nested"])
async def test_a_forged_answer_fails_only_its_own_call(box: Sandbox, attack: str) -> None:
    await beside(box, hostile(attack))
    gone_after_close(box)


# 6. Other calls' data in the worker's memory.
PEEK = """
import gc
needle = "".join(["MA", "RK-"])  # not in this code as one string, even folded
seen, found = set(), []
todo = list(gc.get_objects())
while todo and len(seen) < 2_000_000:
    obj = todo.pop()
    if id(obj) in seen:
        continue
    seen.add(id(obj))
    if isinstance(obj, (bytes, bytearray, str)):
        if needle in str(obj):
            found.append(str(obj)[:80])
        continue
    todo.extend(gc.get_referents(obj))
if found:
    return found
raise LookupError("nothing of another call")
"""


@isolated
async def test_a_call_sees_no_other_calls_output(box: Sandbox) -> None:
    await beside(box, hostile(PEEK), error="LookupError: nothing of another call")
    gone_after_close(box)


# 7. Opted out: a grandchild forked by the code does not outlive the call or close().
GRANDCHILD = """
import os, time
def f():
    pid = os.fork()
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    return pid
"""


def test_opted_out_a_forked_grandchild_ends_with_its_call_and_with_close() -> None:
    with Sandbox(timeout_s=10, isolation="none") as box:
        first = box.run(GRANDCHILD, "f")
        assert first.ok, first
        assert wait_until_gone({first.value: _start_time(first.value)}) == []
        slow = GRANDCHILD.replace("return pid", "time.sleep(60)\n    return pid")
        loop = asyncio.new_event_loop()
        task = loop.create_task(box.arun(slow, "f"))  # in flight while the sandbox closes
        assert box._worker is not None
        worker = box._worker.pid
        deadline = time.monotonic() + 20
        while len(tree(worker)) < 3 and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.05))
        processes = tree(worker)
        assert len(processes) >= 3  # the worker, the child, its grandchild
        box.close()
        assert wait_until_gone(processes) == []
        loop.run_until_complete(asyncio.wait([task], timeout=5))
        loop.close()


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return ""


# The parent killed: the whole sandbox goes, a stopped call and a spinning one included, even
# with the worker itself stopped, so that only the kernel's death signals can end it.
ORPHAN_SCRIPT = """
import json, sys, threading, time
from promptopt.sandbox import Sandbox
box = Sandbox(timeout_s=300, isolation=sys.argv[1])
assert box.run("def f():\\n    return 1\\n", "f").ok
stop = "import os, signal\\ndef f():\\n    os.kill(os.getpid(), signal.SIGSTOP)\\n"
spin = "def f():\\n    while True:\\n        pass\\n"
for source in (stop, spin):
    threading.Thread(target=box.run, args=(source, "f"), daemon=True).start()
print(json.dumps({"worker": box._worker.pid}), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    "isolation",
    [pytest.param("namespaces", marks=isolated), "none"],
)
def test_sigkill_of_the_parent_ends_the_whole_sandbox(isolation: str, tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    before = set(Path(tempfile.gettempdir()).glob("promptopt-sandbox-*"))
    parent = subprocess.Popen(
        [sys.executable, str(script), isolation], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert parent.stdout is not None
        json.loads(parent.stdout.readline())
        deadline = time.monotonic() + 30
        calls = 2 + (3 if isolation == "namespaces" else 1)  # the parent's tree: bwrap, init, ...
        while len(tree(parent.pid)) < calls + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        processes = tree(parent.pid)
        assert len(processes) >= calls + 1, processes
        states = [_state(pid) for pid in processes]
        assert "T" in states  # the stopped call is there, stopped
        (worker,) = [p for p in processes if b"worker.py" in _cmdline(p)
                     and b"worker.py" not in _cmdline(_parent(p))]  # fmt: skip
        os.kill(worker, signal.SIGSTOP)  # a worker that can no longer see its channel close
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert wait_until_gone(processes) == []
    left = set(Path(tempfile.gettempdir()).glob("promptopt-sandbox-*")) - before
    if isolation == "namespaces":
        assert left == set()  # nothing on the host to clean up after a SIGKILL
    for folder in left:  # opted out, the worker's folder is the killed parent's to remove
        shutil.rmtree(folder)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


# Everything at once: 200 honest calls among the attacks, in one run.
ATTACKS = [hostile(a) for a in (MEMFD, SYSV, SEMAPHORES, BUFFERS, DESCRIPTORS, SIGNALS, LIMITS,
                                THREADS, FLOOD, NESTED, PEEK)]  # fmt: skip


@isolated
async def test_two_hundred_honest_calls_among_the_attacks() -> None:
    with Sandbox(timeout_s=10, memory_mb=128) as box:
        honest = [box.arun(HONEST, "f", [i]) for i in range(200)]
        attacks = [box.arun(attack, "f") for _ in range(3) for attack in ATTACKS]
        attacks += [box.arun(hostile(FILES), "f") for _ in range(3)]
        results = await asyncio.gather(*honest, *attacks)
        for i, result in enumerate(results[:200]):
            honest_ok(result, i)
        for result in results[200:]:
            failed(result)
        gone_after_close(box)


@isolated
async def test_calls_past_the_slots_wait_their_turn_with_their_own_clock() -> None:
    """16 stopped calls hold every slot for their whole timeout; the next calls queue, then run."""
    with Sandbox(timeout_s=3.0, memory_mb=64) as box:
        stop = hostile("os.kill(os.getpid(), signal.SIGSTOP)")
        stopped = [asyncio.create_task(box.arun(stop, "f")) for _ in range(16)]
        await asyncio.sleep(0.3)
        steady = "import time\ndef f(x):\n    time.sleep(1.0)\n    return 2 * x\n"
        started = time.monotonic()
        queued = await asyncio.gather(*(box.arun(steady, "f", [i]) for i in range(8)))
        waited = time.monotonic() - started
        for i, result in enumerate(queued):
            honest_ok(result, i)  # 1 s of work in a 3 s timeout, after ~2.7 s in the queue
        assert waited >= 2.5  # they did wait for the stopped calls' slots
        assert all(r.kind == "timeout" for r in await asyncio.gather(*stopped))
        gone_after_close(box)

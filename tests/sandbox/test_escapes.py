"""Escapes tried from proposed code alone: each one fails inside the isolated child.

One regression test per escape the audit-hook guard let through, plus the
parent's environment by every path, TCP to a loopback listener, a fork bomb
and a write through a symlink. These run wherever isolation exists (CI
installs bubblewrap, and ``test_ci_has_isolation`` fails if it is missing
there); where it does not, ``test_sandbox.py`` tests the secure default
(nothing runs without an explicit opt-out).
"""

from __future__ import annotations

import asyncio
import os
import site
import socket
from pathlib import Path

import pytest

from promptopt.sandbox import Sandbox, SandboxResult
from promptopt.sandbox.isolation import isolation_problem

PLANTED = "sk-PLANTED-escape-test-0123456789"
PROBLEM = isolation_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"no isolation here: {PROBLEM}")


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """An isolated sandbox started while a fake key is in this process's environment."""
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setenv("PROMPTOPT_TEST_SECRET", PLANTED)
    with Sandbox(timeout_s=10, memory_mb=256) as sandbox:
        yield sandbox


def run(box: Sandbox, body: str, *args: object) -> SandboxResult:
    """Run ``def f(*args): <body>`` and check the planted key is nowhere in what came back."""
    source = "import os, sys, socket, ctypes\ndef f(*args):\n" + "".join(
        f"    {line}\n" for line in body.strip("\n").splitlines()
    )
    result = box.run(source, "f", list(args))
    assert PLANTED not in repr(result), result
    return result


def refused(result: SandboxResult, *errors: str) -> None:
    """The call ended in the code's own exception, one of ``errors``, and the sandbox goes on."""
    assert result.kind == "exception" and not result.ok, result
    first = (result.error or "").splitlines()[0]
    assert first.startswith(errors), first


def goes_on(box: Sandbox) -> None:
    after = box.run("def f(x):\n    return 2 * x\n", "f", [21])
    assert after.ok and after.value == 42, after


def test_ci_has_isolation() -> None:
    """CI installs bubblewrap: the escape tests must never be skipped there."""
    if os.environ.get("CI") == "true":
        assert PROBLEM is None


def test_not_root_and_no_parent_in_sight(box: Sandbox) -> None:
    result = run(box, "return [os.getuid(), os.geteuid(), os.getpid(), os.path.exists('/proc')]")
    uid, euid, pid, has_proc = result.value
    assert uid == euid == 65534
    assert pid < 100 and not has_proc  # a fresh PID namespace, no /proc to look through


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "/etc/shadow", "/etc/hostname", "/root/.bashrc", "/root/.ssh/id_rsa"],
)
def test_host_files_are_not_there(box: Sandbox, path: str) -> None:
    refused(run(box, "return open(args[0]).read()", path), "FileNotFoundError", "PermissionError")
    goes_on(box)


def test_a_planted_file_and_the_real_home_are_out_of_reach(box: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(PLANTED)
    refused(run(box, "return open(args[0]).read()", str(secret)), "FileNotFoundError")
    home = run(box, "import pwd\nreturn pwd.getpwuid(0).pw_dir")  # no /etc/passwd inside
    refused(home, "KeyError")
    expanded = run(box, "return [os.path.expanduser('~'), os.listdir(os.path.expanduser('~'))]")
    assert expanded.ok and expanded.value[0].startswith("/work/") and expanded.value[1] == []


@pytest.mark.parametrize(
    "body",
    [
        "return open(f'/proc/{os.getppid()}/environ').read()",
        "return open(f'/proc/{args[0]}/environ').read()",
        "return open('/proc/self/environ').read()",
        "return open('/proc/1/environ').read()",
        "d = os.open('/proc', os.O_RDONLY)\nreturn os.read(os.open(f'{args[0]}/environ', 0, dir_fd=d), 9999)",
        "d = os.open(f'/proc/{args[0]}', os.O_RDONLY)\nreturn os.read(os.open('environ', 0, dir_fd=d), 9999)",
        "return [open(f'/proc/{p}/environ').read() for p in os.listdir('/proc') if p.isdigit()]",
        "return open(f'/dev/fd/../../proc/{args[0]}/environ').read()",
    ],
    ids=["ppid", "real-parent", "self", "pid-1", "dir-fd-proc", "dir-fd-pid", "scan", "dotdot"],
)
def test_the_parents_environment_is_unreachable_by_every_path(box: Sandbox, body: str) -> None:
    refused(run(box, body, os.getpid()), "FileNotFoundError", "NotADirectoryError")
    goes_on(box)


def test_mounting_a_proc_is_refused(box: Sandbox) -> None:
    body = """
os.mkdir('p')
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b'proc', b'p', b'proc', 0, None) != 0:
    raise OSError(ctypes.get_errno(), 'mount failed')
return os.listdir('p')
"""
    refused(run(box, body), "PermissionError")


def test_the_environment_holds_no_key(box: Sandbox) -> None:
    result = run(box, "return dict(os.environ)")
    assert result.ok and "OPENAI_API_KEY" not in result.value
    assert set(result.value) <= {"PATH", "LANG", "LC_ALL", "PYTHONHASHSEED", "HOME", "TMPDIR",
                                 "TMP", "TEMP", "PWD"}  # fmt: skip


def test_no_hook_to_disable_and_gc_tricks_open_nothing(box: Sandbox, tmp_path: Path) -> None:
    """The old guard was an audit hook reachable through gc; the boundary now is the kernel's."""
    body = """
import gc, subprocess
guards = [o for o in gc.get_objects() if getattr(o, '__name__', '') == 'guard']
out = [['guards', len(guards)]]  # the old audit hook, which gc reached and switched off
for name, attempt in [
    ('tcp', lambda: socket.create_connection(('127.0.0.1', args[1]), timeout=1)),
    ('write', lambda: open(args[0], 'w').write('escaped')),
    ('spawn', lambda: subprocess.run(['id'])),
    ('fork', lambda: ctypes.CDLL(None).fork()),
]:
    try:
        result = attempt()
        out.append([name, 'ok', repr(result)])
    except OSError as exc:
        out.append([name, type(exc).__name__])
return out
"""
    target = tmp_path / "escaped.txt"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        result = run(box, body, str(target), listener.getsockname()[1])
    assert result.ok, result
    outcome = {entry[0]: entry[1:] for entry in result.value}
    assert outcome["guards"] == [0]
    assert outcome["tcp"] == ["OSError"]
    assert outcome["write"] == ["FileNotFoundError"]
    assert outcome["spawn"] == ["PermissionError"]
    assert outcome["fork"] == ["ok", "-1"]  # libc's fork returns -1: the kernel refused
    assert not target.exists()


def test_ctypes_system_calls_are_filtered(box: Sandbox) -> None:
    body = """
libc = ctypes.CDLL(None, use_errno=True)
calls = {
    'socket-inet': lambda: libc.socket(2, 1, 0),
    'socket-inet6': lambda: libc.socket(10, 1, 0),
    'fork': lambda: libc.fork(),
    'execve': lambda: libc.execve(b'/usr/bin/id', None, None),
    'ptrace': lambda: libc.ptrace(16, 1, 0, 0),
    'unshare': lambda: libc.unshare(0x10000000),
    'kill-init': lambda: libc.kill(1, 9),
}
return {name: [call(), ctypes.get_errno()] for name, call in calls.items()}
"""
    result = run(box, body)
    assert result.ok, result
    assert all(ret == -1 for ret, _ in result.value.values()), result.value
    assert result.value["socket-inet"][1] == 97  # EAFNOSUPPORT
    assert all(err == 1 for name, (_, err) in result.value.items() if name != "socket-inet" and
               name != "socket-inet6")  # fmt: skip
    goes_on(box)


@pytest.mark.parametrize(
    "body",
    [
        "import sqlite3\nreturn sqlite3.connect(f'file:{args[0]}/db.sqlite?mode=rwc', uri=True).execute('create table t(x)').fetchall()",
        "import sqlite3\nc = sqlite3.connect(':memory:')\nc.execute(f\"ATTACH DATABASE '{args[0]}/attached.sqlite' AS a\")\nc.execute('create table a.t(x)')\nreturn 1",
        "import sqlite3\nreturn sqlite3.connect(f'{args[0]}/plain.sqlite').execute('create table t(x)').fetchall()",
    ],
    ids=["uri-mode-rwc", "attach", "plain"],
)
def test_sqlite_writes_outside_fail(box: Sandbox, tmp_path: Path, body: str) -> None:
    before = sorted(tmp_path.iterdir())
    refused(run(box, body, str(tmp_path)), "OperationalError")
    assert sorted(tmp_path.iterdir()) == before


def test_a_forged_answer_is_only_ever_its_own(box: Sandbox) -> None:
    """The answer pipe is the child's own: garbage, extra fields or floods are not believed."""
    garbage = run(box, "os.write(3, b'{not json'); os._exit(0)")
    assert garbage.kind == "killed" and not garbage.ok
    extra = run(
        box, 'os.write(3, b\'{"kind": "ok", "error": null, "value": 1, "x": 2}\')\nos._exit(0)'
    )
    assert extra.kind == "killed" and not extra.ok
    flood = run(box, "while True:\n    os.write(3, b'x' * 65536)")
    assert flood.kind == "exception" and "size limit" in (flood.error or "")
    goes_on(box)


def test_no_descriptor_of_the_parent_or_worker_is_open(box: Sandbox) -> None:
    body = """
open_fds = []
for fd in range(4, 4096):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
return open_fds
"""
    result = run(box, body)
    assert result.ok and result.value == [], result


async def test_a_hostile_call_cannot_touch_a_concurrent_one(box: Sandbox) -> None:
    hostile = """
import signal
for pid in range(1, 200):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
for fd in range(0, 64):
    try:
        os.write(fd, b'{"id": 1, "answer": "{}", "timed_out": false}\\n')
    except OSError:
        pass
return 'done'
"""
    slow = "import time\ndef f(x):\n    time.sleep(1)\n    return x * 2\n"
    honest = asyncio.create_task(box.arun(slow, "f", [21]))
    await asyncio.sleep(0.3)
    hostile_result = await box.arun("import os\ndef f():\n" + "".join(
        f"    {line}\n" for line in hostile.strip().splitlines()), "f")  # fmt: skip
    assert (await honest).value == 42
    assert hostile_result.kind in ("ok", "killed")


def test_third_party_extensions_do_not_import(box: Sandbox) -> None:
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    body = """
sys.path.extend(args[0])
found = {}
for name in ('pydantic_core', 'yaml', 'llama_cpp', 'openai'):
    try:
        __import__(name)
        found[name] = 'imported'
    except ImportError as exc:
        found[name] = type(exc).__name__
return found
"""
    result = run(box, body, paths)
    assert result.ok and set(result.value.values()) == {"ModuleNotFoundError"}, result.value


def test_tcp_to_a_loopback_listener_fails(box: Sandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        result = run(
            box, "return socket.create_connection(('127.0.0.1', args[0]), 2).fileno()", port
        )
        refused(result, "OSError")
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected


def test_a_fork_bomb_is_stopped_at_the_first_fork(box: Sandbox) -> None:
    refused(run(box, "while True:\n    os.fork()"), "PermissionError")
    refused(run(box, "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()"),
            "PermissionError")  # fmt: skip
    goes_on(box)


def test_threads_are_refused_and_the_sandbox_goes_on(box: Sandbox) -> None:
    """A call is one task on every machine (test_containment has the raw-clone flood)."""
    body = """
import threading
t = threading.Thread(target=print)
t.start()
"""
    refused(run(box, body), "RuntimeError: can't start new thread")
    goes_on(box)


@pytest.mark.parametrize("target", ["host", "usr"])
def test_a_write_through_a_symlink_fails(box: Sandbox, tmp_path: Path, target: str) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("original")
    path = str(keep) if target == "host" else "/usr/lib/os-release"
    refused(run(box, "os.symlink(args[0], 'link')\nopen('link', 'w').write('changed')", path),
            "FileNotFoundError", "PermissionError", "OSError")  # fmt: skip
    assert keep.read_text() == "original"


def test_writes_outside_the_work_folder_fail_everywhere(box: Sandbox, tmp_path: Path) -> None:
    body = """
out = {}
for path in ('/usr/x', '/opt/promptopt-sandbox/x', '/x', '/dev/x', '/tmp/x', '/work/x', args[0] + '/x'):
    try:
        open(path, 'w').write('x')
        out[path] = 'written'
    except OSError as exc:
        out[path] = type(exc).__name__
return out
"""
    before = sorted(tmp_path.iterdir())
    result = run(box, body, str(tmp_path))
    assert result.ok and "written" not in result.value.values(), result.value
    assert sorted(tmp_path.iterdir()) == before


async def test_concurrent_calls_cannot_see_each_others_folders(box: Sandbox) -> None:
    """Calls of one worker share /work; Landlock keeps each to its own folder."""
    writer = "import os, time\ndef f():\n    open('mine.txt', 'w').write('private')\n    time.sleep(1.5)\n    return os.getcwd()\n"
    peeker = "import os\ndef f():\n    out = {}\n    for path in ('/work', '/tmp'):\n        try:\n            out[path] = os.listdir(path)\n        except OSError as exc:\n            out[path] = type(exc).__name__\n    return out\n"
    first = asyncio.create_task(box.arun(writer, "f"))
    await asyncio.sleep(0.5)
    peek = await box.arun(peeker, "f")
    assert (await first).ok
    assert peek.value == {"/work": "PermissionError", "/tmp": "PermissionError"}, peek


def test_the_work_folder_is_the_only_writable_place_and_holds_no_earlier_call(box: Sandbox) -> None:
    run(box, "open('left-behind', 'w').write('x')\nreturn os.getcwd()")
    later = run(box, "return [os.getcwd(), os.listdir('.')]")
    assert later.ok and later.value[1] == []

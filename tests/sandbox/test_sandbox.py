"""Tests of the sandbox for trainable code: secrets, timeouts, memory, writes, and going on after each."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import promptopt.sandbox as sandbox_pkg
from promptopt.errors import ConfigError, PromptoptError
from promptopt.sandbox import Sandbox, SandboxError, SandboxResult, scrubbed_environment
from promptopt.sandbox.isolation import isolation_problem
from promptopt.sandbox.runner import _result

DOUBLE = "def double(x):\n    return 2 * x\n"
TIMEOUT_S = 0.5
ISOLATIONS = ["namespaces", "none"] if isolation_problem() is None else ["none"]


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest) -> str:
    """Every behaviour holds isolated (where it can be) and opted out alike."""
    return request.param


@pytest.fixture
def box(isolation: str) -> Iterator[Sandbox]:
    """For calls that should end by themselves: room for a slow start on a loaded machine."""
    with Sandbox(timeout_s=10, memory_mb=128, isolation=isolation) as sandbox:
        yield sandbox


@pytest.fixture
def quick(isolation: str) -> Iterator[Sandbox]:
    """For calls that should time out."""
    with Sandbox(timeout_s=TIMEOUT_S, memory_mb=128, isolation=isolation) as sandbox:
        yield sandbox


def goes_on(box: Sandbox) -> None:
    """The acceptance's "the run goes on": a normal call right after a failure works."""
    after = box.run(DOUBLE, "double", [21])
    assert after.ok and after.kind == "ok" and after.value == 42, after


def test_public_names() -> None:
    assert set(sandbox_pkg.__all__) == {
        "DEFAULT_ENV_ALLOW",
        "Sandbox",
        "SandboxError",
        "SandboxKind",
        "SandboxResult",
        "scrubbed_environment",
    }
    assert issubclass(SandboxError, PromptoptError)


def test_a_normal_function_returns_its_value(box: Sandbox) -> None:
    source = "def f(a, b, *, scale):\n    return {'sum': (a + b) * scale, 'pair': (a, b)}\n"
    result = box.run(source, "f", [1, 2], {"scale": 10})
    assert result == SandboxResult(
        ok=True,
        value={"sum": 30, "pair": [1, 2]},
        error=None,
        kind="ok",
        duration_s=result.duration_s,
    )
    assert result.duration_s > 0


def test_an_async_function_is_awaited(box: Sandbox) -> None:
    source = "import asyncio\nasync def f(x):\n    await asyncio.sleep(0)\n    return x + 1\n"
    assert box.run(source, "f", [1]).value == 2


def test_output_tails_come_back(box: Sandbox) -> None:
    source = (
        "import sys\ndef f():\n    print('x' * 100000)\n    print('to out')\n"
        "    print('to err', file=sys.stderr)\n    return None\n"
    )
    result = box.run(source, "f")
    assert result.ok and result.value is None
    assert result.stdout.endswith("to out\n") and len(result.stdout) <= 8192
    assert result.stderr == "to err\n"


def test_the_child_sees_no_key(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "OPENAI_API_KEY": "sk-parent-openai",
        "ANTHROPIC_API_KEY": "sk-ant-parent",
        "HF_TOKEN": "hf-parent",
        "MY_SECRET": "parent-secret",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    # Even when allowed by name, a secret-looking variable is never copied.
    leaky = Sandbox(timeout_s=10, env_allow=("LANG", *secrets), isolation=box.isolation)
    source = "import os\ndef f():\n    return [dict(os.environ), os.getcwd()]\n"
    for sandbox in (box, leaky):
        result = sandbox.run(source, "f")
        assert result.ok, result.error
        env, cwd = result.value
        assert not set(secrets) & set(env)
        assert not any(value in repr(env) for value in secrets.values())
        assert env["HOME"] == env["TMPDIR"] == os.path.realpath(cwd)
        assert env["LANG"] == "C.UTF-8"
        goes_on(sandbox)


def test_an_infinite_loop_is_killed_at_the_timeout(quick: Sandbox, box: Sandbox) -> None:
    result = quick.run("def spin():\n    while True:\n        pass\n", "spin")
    assert result.kind == "timeout" and not result.ok and result.value is None
    assert result.duration_s >= TIMEOUT_S
    goes_on(quick)
    goes_on(box)


def test_a_hung_sleep_is_killed_too(quick: Sandbox, box: Sandbox) -> None:
    result = quick.run("import time\ndef nap():\n    time.sleep(60)\n", "nap")
    assert result.kind == "timeout" and result.duration_s >= TIMEOUT_S
    goes_on(box)


@pytest.mark.parametrize(
    "source",
    [
        "def bomb():\n    return len(bytearray(2 ** 32))\n",
        "def bomb():\n    chunks = []\n    while True:\n        chunks.append(bytearray(1 << 20))\n",
        "def bomb():\n    return len('x' * (1 << 30))\n",
    ],
    ids=["one-big-block", "growing-list", "big-string"],
)
def test_a_memory_bomb_is_stopped(box: Sandbox, source: str) -> None:
    result = box.run(source, "bomb")
    assert result.kind == "memory" and not result.ok, result
    assert "MemoryError" in (result.error or "")
    goes_on(box)


def test_writes_inside_the_temp_folder_work(box: Sandbox) -> None:
    source = (
        "import os, shutil, tempfile\n"
        "def f():\n"
        "    os.makedirs('a/b')\n"
        "    with open('a/b/c.txt', 'w') as out:\n"
        "        out.write('hello')\n"
        "    with tempfile.NamedTemporaryFile(dir=os.environ['HOME']) as t:\n"
        "        t.write(b'x')\n"
        "    text = open('a/b/c.txt').read()\n"
        "    shutil.rmtree('a')\n"
        "    open(os.devnull, 'w').write('ignored')\n"
        "    return [text, os.listdir('.')]\n"
    )
    result = box.run(source, "f")
    assert result.ok, result.error
    assert result.value == ["hello", []]


def test_each_run_gets_a_fresh_folder_that_is_removed(box: Sandbox) -> None:
    source = "import os\ndef f():\n    open('mark', 'w').close()\n    return os.getcwd()\n"
    first, second = box.run(source, "f"), box.run(source, "f")
    assert first.ok and second.ok and first.value != second.value
    if box.isolation == "none":  # isolated, the folders are inside the sandbox's own /work
        assert not Path(first.value).exists() and not Path(second.value).exists()


def test_a_syntax_error_is_invalid(box: Sandbox) -> None:
    result = box.run("def f(:\n    return 1\n", "f")
    assert result.kind == "invalid" and not result.ok
    assert (result.error or "").startswith("SyntaxError:")
    goes_on(box)


def test_a_missing_function_is_invalid(box: Sandbox) -> None:
    result = box.run("x = 1\n", "f")
    assert result.kind == "invalid" and "'f'" in (result.error or "")


def test_an_exception_reports_one_line_and_the_traceback(box: Sandbox) -> None:
    source = "def f(x):\n    return helper(x)\ndef helper(x):\n    raise ValueError(f'bad {x!r}')\n"
    result = box.run(source, "f", ["input"])
    assert result.kind == "exception" and not result.ok
    error = result.error or ""
    assert error.splitlines()[0] == "ValueError: bad 'input'"
    assert 'File "<candidate>", line 4, in helper' in error
    assert "raise ValueError" in error  # the candidate's source line is shown
    assert "worker.py" not in error  # the sandbox's own frames are not
    goes_on(box)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("def f():\n    raise SystemExit(3)\n", "exception"),
        ("def f():\n    return {1, 2}\n", "exception"),
        ("import os\ndef f():\n    os._exit(4)\n", "killed"),
    ],
    ids=["system-exit", "not-json", "hard-exit"],
)
def test_odd_endings_are_results_too(box: Sandbox, source: str, kind: str) -> None:
    result = box.run(source, "f")
    assert result.kind == kind and not result.ok and result.error, result
    goes_on(box)


def test_the_end_of_a_child_is_classified() -> None:
    def end(**fields: object) -> SandboxResult:
        message = {"answer": None, "timed_out": False, "oversize": False, "returncode": 0,
                   "stdout": "", "stderr": "", "duration_s": 0.1}  # fmt: skip
        return _result({**message, **fields})

    assert end(returncode=-signal.SIGXCPU).kind == "timeout"
    assert end(returncode=-signal.SIGABRT, stderr="MemoryError\n").kind == "memory"
    other = end(returncode=-signal.SIGSEGV, stderr="boom\n")
    assert other.kind == "killed" and "boom" in (other.error or "")
    assert end(timed_out=True).kind == "timeout"
    assert end(oversize=True).kind == "exception"
    good = '{"kind": "ok", "error": null, "value": [1]}'
    assert end(answer=good) == SandboxResult(True, [1], None, "ok", 0.1)
    for forged in ('{"kind": "ok"}', '{"kind": "yes", "error": null, "value": 1}', "[]", "{",
                   '{"kind": "ok", "error": 5, "value": 1}'):  # fmt: skip
        assert end(answer=forged).kind == "killed", forged


async def test_concurrent_aruns_do_not_block_the_loop(box: Sandbox, quick: Sandbox) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    spin = asyncio.create_task(quick.arun("def spin():\n    while True:\n        pass\n", "spin"))
    results = await asyncio.gather(
        *(box.arun(DOUBLE, "double", [i]) for i in range(6)),
        box.arun("def bomb():\n    return bytearray(2 ** 32)\n", "bomb"),
    )
    ticks_before_spin_ended = ticks
    spun = await spin
    beat.cancel()
    assert [r.value for r in results[:6]] == [0, 2, 4, 6, 8, 10]
    assert results[6].kind == "memory" and spun.kind == "timeout"
    assert ticks_before_spin_ended >= 1  # the loop kept running while the children did


async def test_sync_run_inside_a_running_loop(box: Sandbox) -> None:
    assert box.run(DOUBLE, "double", [5]).value == 10


async def test_a_cancelled_arun_kills_its_child(box: Sandbox) -> None:
    assert box.run(DOUBLE, "double", [1]).value == 2  # the worker is up
    worker = box._worker
    assert worker is not None
    baseline = len(live_pythons(worker.pid))
    task = asyncio.create_task(box.arun("def spin():\n    while True:\n        pass\n", "spin"))
    assert await eventually(lambda: len(live_pythons(worker.pid)) == baseline + 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await eventually(lambda: len(live_pythons(worker.pid)) == baseline)  # SIGKILL is quick
    assert (await box.arun(DOUBLE, "double", [1])).value == 2


async def eventually(check: Callable[[], bool], *, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def live_pythons(root: int) -> list[int]:
    """Pids of running (not zombie) Python processes in ``root``'s process tree, itself included."""
    parent_of: dict[int, int] = {}
    running: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        parent_of[int(entry.name)] = int(fields.get("PPid", "0").strip())
        if (
            b"worker.py" in cmdline
            and not cmdline.startswith(b"bwrap")
            and not fields.get("State", "").startswith("Z")
        ):
            running.add(int(entry.name))

    def in_tree(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parent_of.get(pid, 0)
        return False

    return sorted(pid for pid in running if in_tree(pid))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"timeout_s": float("inf")},
        {"timeout_s": "5"},
        {"memory_mb": 8},
        {"memory_mb": 1.5},
        {"env_allow": "PATH"},
        {"env_allow": ("A=B",)},
        {"isolation": "chroot"},
        {"max_result_bytes": 10},
    ],
)
def test_bad_settings_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Sandbox(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "function", "args", "kwargs"),
    [
        (b"def f(): pass", "f", (), {}),
        (DOUBLE, "not a name", (), {}),
        (DOUBLE, "class", (), {}),
        (DOUBLE, "double", "x", {}),
        (DOUBLE, "double", [object()], {}),
        (DOUBLE, "double", [], {1: 2}),
    ],
    ids=["bytes-source", "bad-name", "keyword", "str-args", "non-json-arg", "int-key"],
)
def test_misuse_raises(
    box: Sandbox, source: object, function: object, args: object, kwargs: object
) -> None:
    with pytest.raises(ConfigError):
        box.run(source, function, args, kwargs)  # type: ignore[arg-type]


def test_scrubbed_environment() -> None:
    environ = {"PATH": "/bin", "LANG": "C", "GITHUB_TOKEN": "t", "api_key": "k", "OTHER": "o"}
    env = scrubbed_environment(
        environ, allow=("PATH", "GITHUB_TOKEN", "api_key", "LC_ALL"), home="/h"
    )
    assert env == {"PATH": "/bin", "HOME": "/h", "TMPDIR": "/h", "TMP": "/h", "TEMP": "/h"}

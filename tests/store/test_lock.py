"""The run lock: one process per run, no stale lock after a kill, a clear error when unwritable."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import promptopt.store.lock as lock_module
from promptopt.errors import RunInUseError, StoreError
from promptopt.store import RunLock
from promptopt.store.lock import LOCK_FILE

REPO = Path(__file__).resolve().parents[2]

_HOLDER = """
import sys
from promptopt.store import RunLock
lock = RunLock.acquire(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # hold it until told to stop (or killed)
"""


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    first = RunLock.acquire(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    with pytest.raises(RunInUseError, match=rf"run '{tmp_path.name}' is in use by another "
                       rf"process \(pid {os.getpid()}\)"):  # fmt: skip
        RunLock.acquire(tmp_path)
    first.release()
    first.release()  # twice is harmless
    with RunLock.acquire(tmp_path) as second:
        assert second.held
    assert not second.held


def test_another_process_holds_it_and_a_kill_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=rf"\(pid {holder.pid}\)"):
            RunLock.acquire(tmp_path)
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    assert (tmp_path / LOCK_FILE).exists()  # the file stays; the lock died with its process
    with RunLock.acquire(tmp_path) as lock:
        assert lock.held


def test_an_unwritable_run_folder_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    def read_only(path: Path) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(lock_module, "_open_lock_file", read_only)
    with pytest.raises(StoreError, match="cannot write to run folder .*Read-only file system"):
        RunLock.acquire(tmp_path)

"""One process per run: an exclusive ``flock`` on ``<run>/run.lock`` while a run is optimized.

:meth:`RunLock.acquire` takes the lock without waiting and writes the holder's
pid into the file; a second process gets :class:`~promptopt.errors.RunInUseError`
naming that pid. The kernel drops a ``flock`` when its process ends, however it
ends, so a crashed or killed run never leaves a stale lock behind (the file
stays, empty of meaning). Reading a run (``promptopt runs``, ``eval``, ``graph``)
takes no lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from promptopt.errors import RunInUseError, StoreError

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = "run.lock"


def _open_lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


class RunLock:
    """The held lock of one run folder; release it (or leave the ``with`` block) when done."""

    def __init__(self, root: Path, fd: int) -> None:
        self.root = root
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, root: Path | str) -> Self:
        """Lock run folder ``root`` for this process, or raise at once if another holds it."""
        root = Path(root)
        try:
            fd = _open_lock_file(root / LOCK_FILE)
        except OSError as exc:
            raise StoreError(
                f"cannot write to run folder {str(root)!r}: {exc.strerror or exc}; "
                "a run needs a writable folder with free space"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise RunInUseError(
                f"run {root.name!r} is in use by another process (pid {holder or 'unknown'}); "
                "wait for it to end, or stop it, before resuming"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        _write_pid(fd)
        return cls(root, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (closing the file drops it); releasing twice does nothing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.root)!r}, held={self.held})"


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _write_pid(fd: int) -> None:
    """Record the holder's pid for the refusal message; a full disk only loses the pid."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass

"""How the sandbox's worker is started: inside bubblewrap's namespaces, or (opted out) as it is.

``namespaces`` (the default) runs the worker under ``bwrap`` with

- fresh user, PID, network, mount, IPC, UTS and cgroup namespaces: no
  network interface but its own loopback, no other process in sight, user
  ``nobody`` inside and no capabilities;
- a root file system built from nothing: ``/usr`` and the interpreter's own
  prefix read-only (its site-packages hidden under an empty tmpfs, so only
  the standard library imports), the worker's folder read-only, a minimal
  ``/dev``, and small tmpfs folders as the only writable places: one per
  call slot (``/work/s<n>``, as large as a call's file allowance, so no call
  can fill another's), and ``/tmp``; no ``/proc``, no ``/etc`` but the
  loader's cache, no home;
- an environment built from scratch (only the allowed, secret-free names);
- ``--die-with-parent`` (the parent starts bubblewrap from a thread that lives
  as long as the process, since the kernel ties that signal to the thread)
  and ``--info-fd``, which names the namespace's init: killing it ends every
  process of the sandbox, whatever state they are in.

Inside, every call's child also installs :mod:`promptopt.sandbox.seccomp` and
:mod:`promptopt.sandbox.landlock`. Why bubblewrap rather than our own
``unshare`` and mounts: it is a small, audited setuid-free tool (Flatpak's),
packaged everywhere, that gets the uid maps, ``pivot_root`` and mount flags
right; doing the same through ``ctypes`` would be a second, untested copy of
it. Landlock is what separates the calls of one worker, which share its
namespaces: their folders, and (Linux 6.12 on) their signals and abstract
sockets.

``none`` is the explicit opt-out: the worker runs as a plain child with the
scrubbed environment and the resource limits, and the proposed code can read
whatever the user can. :func:`isolation_problem` says why ``namespaces``
cannot work on this machine, before anything is started.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from promptopt.sandbox import seccomp

__all__ = ["ISOLATIONS", "Isolation", "bwrap_command", "isolation_problem", "worker_command"]

Isolation = Literal["namespaces", "none"]
ISOLATIONS: tuple[Isolation, ...] = ("namespaces", "none")

WORKER_DIR = "/opt/promptopt-sandbox"
WORK_ROOT = "/work"
_WORKER = Path(__file__).with_name("worker.py")
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_LOADER_FILES = ("/etc/ld.so.cache",)


@functools.cache
def isolation_problem() -> str | None:
    """Why proposed code cannot run isolated here, or None when it can (checked once)."""
    if sys.platform != "linux":
        return f"isolation needs Linux namespaces and seccomp; this is {sys.platform!r}"
    if not seccomp.supported():
        return "isolation has a seccomp table for x86-64 Linux only"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed ('bwrap' is not on PATH; apt-get install bubblewrap)"
    try:
        probe = subprocess.run(
            [bwrap, "--unshare-all", "--ro-bind", "/", "/", "true"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot start: {exc}"
    if probe.returncode != 0:
        reason = probe.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return f"bubblewrap cannot create namespaces here: {reason[0]}"
    return None


def _interpreter() -> tuple[str, list[str]]:
    """The real interpreter file and the folders it needs read-only (beyond /usr)."""
    executable = os.path.realpath(sys.executable)
    prefixes = {os.path.realpath(sys.base_prefix), os.path.dirname(executable)}
    return executable, sorted(p for p in prefixes if not _under(p, "/usr"))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _hidden_packages() -> list[str]:
    """Third-party package folders inside the bound prefixes: covered with empty tmpfs."""
    base = os.path.realpath(sys.base_prefix)
    paths = sysconfig.get_paths(vars={"base": base, "platbase": base})
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = {
        paths["purelib"],
        paths["platlib"],
        "/usr/lib/python3/dist-packages",
        f"/usr/local/lib/{version}/dist-packages",
        f"/usr/local/lib/{version}/site-packages",
    }
    return sorted(p for p in found if os.path.isdir(p))


def bwrap_command(
    *, env: Mapping[str, str], slots: int, slot_bytes: int, info_fd: int
) -> list[str]:
    """The full ``bwrap ... python worker.py isolated /work SLOTS`` command line.

    bubblewrap writes ``{"child-pid": N}`` on ``info_fd``: N, the namespace's
    init, is the process whose death ends every process of the sandbox.
    """
    bwrap = shutil.which("bwrap") or "bwrap"
    executable, prefixes = _interpreter()
    argv = [
        bwrap,
        "--die-with-parent",
        "--info-fd",
        str(info_fd),
        "--unshare-all",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--cap-drop",
        "ALL",
        "--new-session",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in _TOP_LEVEL:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _LOADER_FILES:
        argv += ["--ro-bind-try", path, path]
    for prefix in prefixes:
        argv += ["--ro-bind", prefix, prefix]
    for packages in _hidden_packages():
        argv += ["--tmpfs", packages]
    argv += ["--ro-bind", str(_WORKER.parent), WORKER_DIR, "--dev", "/dev"]
    argv += ["--size", str(1 << 20), "--tmpfs", WORK_ROOT]
    for slot in range(slots):  # a tmpfs per slot: a call's files count against its own size
        argv += ["--size", str(slot_bytes), "--tmpfs", f"{WORK_ROOT}/s{slot}"]
    argv += ["--size", str(1 << 20), "--tmpfs", "/tmp", "--chdir", WORK_ROOT]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]  # bwrap's own root tmpfs too
    for name, value in sorted(env.items()):
        argv += ["--setenv", name, value]
    worker = f"{WORKER_DIR}/{_WORKER.name}"
    return [*argv, executable, "-I", "-S", "-B", worker, "isolated", WORK_ROOT, str(slots)]


def worker_command(root: str, *, slots: int) -> list[str]:
    """The plain worker's command line (``isolation: none``), working under ``root``."""
    return [sys.executable, "-I", "-S", "-B", str(_WORKER), "none", root, str(slots)]

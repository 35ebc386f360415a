"""Landlock rules a sandboxed call puts on itself: read the system, write only its own folder.

Inside the worker's mount namespace the system folders are read-only already;
what the mount namespace cannot give is a difference between the concurrent
calls of one worker, which share ``/work``. This ruleset does: after
:func:`restrict`, the calling process may

- read and execute beneath the folders in ``readable`` (the system, the
  interpreter, ``/dev``) and nothing else: not ``/work``, not ``/tmp``;
- write to the device nodes under ``devices`` (``/dev/null`` and the like:
  that folder is a read-only tmpfs, so no file can be made there);
- read and change anything beneath ``writable`` (its own call folder);
- write to no other file, on any file system;
- where the kernel has Landlock's scopes (ABI 6, Linux 6.12): signal no
  process outside its own domain (the worker, every other call) and connect
  to no abstract unix socket bound outside it. The seccomp filter refuses
  signals to other processes on any kernel; this is the second wall.

A kernel without Landlock (before 5.13, or with it left out of the LSM
list) makes :func:`restrict` return False; the namespaces and seccomp still
hold, and only the separation between one worker's concurrent calls is lost.
Standard library only: this module is imported inside the sandbox.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable, Sequence

__all__ = ["restrict"]

# x86-64 numbers (the same on every architecture that has them).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_ALL_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_ALL_NEWEST = (1 << 16) - 1  # ABI 5 added IOCTL_DEV; later ABIs add no file-system right yet
_SCOPED_ABI = 6
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


def _all_rights(abi: int) -> int:
    return _ALL_BY_ABI.get(abi, _ALL_NEWEST)


def restrict(*, readable: Sequence[str], writable: str, devices: str = "/dev") -> bool:
    """Restrict this process (and its threads to come); False if the kernel has no Landlock."""
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    if abi < 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset(version) failed")
    handled = _all_rights(abi)
    if abi >= _SCOPED_ABI:  # handled_access_fs, handled_access_net (none), scoped
        scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        fields = struct.pack("<QQQ", handled, 0, scoped)
    else:
        fields = struct.pack("<Q", handled)
    attr = ctypes.create_string_buffer(fields, len(fields))
    ruleset = syscall(_CREATE_RULESET, attr, ctypes.c_size_t(len(fields)), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in readable:
            _allow(syscall, ruleset, path, _READ | (_WRITE_FILE if path == devices else 0))
        _allow(syscall, ruleset, writable, handled)
        if syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return True


def _allow(syscall: Callable[..., int], ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        rule = ctypes.create_string_buffer(struct.pack("<Qi", rights, fd), 12)
        if syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path!r}) failed")
    finally:
        os.close(fd)

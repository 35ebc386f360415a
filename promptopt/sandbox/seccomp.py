"""The seccomp filter a sandboxed call installs on itself before running proposed code.

A classic BPF program over ``struct seccomp_data`` that refuses, with an errno
(so Python raises ``PermissionError``/``OSError`` in the candidate's frame):

- sockets other than ``AF_UNIX`` (``EAFNOSUPPORT``);
- new tasks of any kind: ``fork``, ``vfork``, ``clone`` (threads too: a call is
  one task, whatever the machine's cgroups; ``clone3`` answers ``ENOSYS``, so
  the C library falls back to ``clone``);
- memory outside the address-space limit: ``memfd_create``, SysV shared
  memory, semaphores and message queues, POSIX message queues (so no IPC
  object can outlive the call or reach another one);
- naming any process but the caller: signals (``kill``, ``tgkill``, ...), and
  limits, priorities, affinities, scheduling and I/O priorities (allowed for
  pid 0 or the caller's own pid only); ``fcntl`` ``F_SETOWN``/``F_SETSIG``/
  ``F_SETOWN_EX`` and ``ioctl`` ``FIOSETOWN``/``SIOCSPGRP``, which would make the
  kernel signal another process; ``F_SETPIPE_SZ`` and socket buffer sizes,
  so 64 descriptors hold a few MiB of kernel buffers at most;
- ``execve``/``execveat``, ``ptrace``, other processes' memory, mounts,
  namespaces, keyrings, BPF, perf, io_uring, kernel modules, ``kexec`` and the
  rest of the table below.

A process of another ABI (x32, or 32-bit calls from a 64-bit process) is
killed. The table exists for x86-64 only; :func:`supported` says whether this
machine has one, and the sandbox refuses to call itself isolated where it has
not. Standard library only: this module is imported inside the sandbox.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

__all__ = ["install", "program", "supported"]

_ARCH = "x86_64"
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
_SOCKET, _CLONE3, _FCNTL, _IOCTL, _SETSOCKOPT = 41, 435, 72, 16, 54
_SIGNAL_CALLS = (62, 234, 129, 297)  # kill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo
# Calls whose first argument names a process: allowed for 0 ("the caller") or the caller's pid.
_PID_CALLS = {
    "getpgid": 121,
    "getsid": 124,
    "sched_setparam": 142,
    "sched_getparam": 143,
    "sched_setscheduler": 144,
    "sched_getscheduler": 145,
    "sched_rr_get_interval": 148,
    "sched_setaffinity": 203,
    "sched_getaffinity": 204,
    "migrate_pages": 256,
    "move_pages": 279,
    "prlimit64": 302,
    "sched_setattr": 314,
    "sched_getattr": 315,
}
# (which, who) calls: allowed only for "a process" (PRIO_PROCESS, IOPRIO_WHO_PROCESS) that is
# the caller; a process group or a user would reach the worker and every other call.
_WHO_CALLS = {
    "getpriority": (140, 0),
    "setpriority": (141, 0),
    "ioprio_set": (251, 1),
    "ioprio_get": (252, 1),
}
# fcntl commands that would make the kernel signal another process (F_SETOWN, F_SETSIG,
# F_SETOWN_EX) or grow a pipe's kernel buffer to 1 MiB (F_SETPIPE_SZ).
_FCNTL_REFUSED = (8, 10, 15, 1031)
_IOCTL_REFUSED = (0x8901, 0x8902, 0x5410)  # FIOSETOWN, SIOCSPGRP, TIOCSPGRP
# Socket buffer sizes (SO_SNDBUF, SO_RCVBUF and their FORCE forms): a socket keeps the
# default, so 64 descriptors hold a few MiB of kernel buffers, not 64 times wmem_max.
_SOL_SOCKET, _SOCKOPT_REFUSED = 1, (7, 8, 32, 33)
_REFUSED = {
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "execveat": 322,
    "ptrace": 101,
    "capget": 125,
    "capset": 126,
    "syslog": 103,
    "personality": 135,
    "uselib": 134,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "tkill": 200,
    "lookup_dcookie": 212,
    "semtimedop": 220,
    "clock_settime": 227,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "get_robust_list": 274,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "memfd_create": 319,
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_open": 434,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "memfd_secret": 447,
    "process_mrelease": 448,
}

_AF_UNIX = 1

# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_ABS_W, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_NR_AT, _ARCH_AT = 0, 4


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of argument ``index`` (little-endian ``u64 args[6]`` at 16)."""
    return 16 + 8 * index


def supported() -> bool:
    """Whether this machine has a system-call table here (Linux on x86-64)."""
    return platform.system() == "Linux" and platform.machine() == _ARCH


def program(own_pid: int) -> bytes:
    """The filter as ``struct sock_filter[]`` bytes; ``own_pid`` is the only process it may name."""
    code: list[tuple[int, object, object, int]] = []  # (op, jump-if-true, jump-if-false, k)
    labels: dict[str, int] = {}

    def emit(op: int, k: int, jt: object = 0, jf: object = 0) -> None:
        code.append((op, jt, jf, k))

    def label(name: str) -> None:
        labels[name] = len(code)

    emit(_LD_ABS_W, _ARCH_AT)
    emit(_JEQ, _AUDIT_ARCH_X86_64, 0, "kill")
    emit(_LD_ABS_W, _NR_AT)
    emit(_JGE, _X32_BIT, "kill", 0)
    emit(_JEQ, _SOCKET, "socket", 0)
    emit(_JEQ, _CLONE3, "nosys", 0)
    emit(_JEQ, _FCNTL, "fcntl", 0)
    emit(_JEQ, _IOCTL, "ioctl", 0)
    emit(_JEQ, _SETSOCKOPT, "setsockopt", 0)
    for number in _SIGNAL_CALLS:
        emit(_JEQ, number, "own-pid", 0)
    for number in _PID_CALLS.values():
        emit(_JEQ, number, "own-or-0", 0)
    for number, which in _WHO_CALLS.values():
        emit(_JEQ, number, f"which-{which}", 0)
    for number in sorted(_REFUSED.values()):
        emit(_JEQ, number, "deny", 0)
    emit(_RET, _ALLOW)
    label("socket")
    emit(_LD_ABS_W, _arg_low(0))
    emit(_JEQ, _AF_UNIX, "allow", 0)
    emit(_RET, _ERRNO | errno.EAFNOSUPPORT)

    def refuse_when(arg: int, values: tuple[int, ...]) -> None:
        """Deny the call when argument ``arg`` is one of ``values``; allow it otherwise."""
        emit(_LD_ABS_W, _arg_low(arg))
        for value in values:
            emit(_JEQ, value, "deny", 0)
        emit(_RET, _ALLOW)

    label("fcntl")
    refuse_when(1, _FCNTL_REFUSED)
    label("ioctl")
    refuse_when(1, _IOCTL_REFUSED)
    label("setsockopt")
    emit(_LD_ABS_W, _arg_low(1))
    emit(_JEQ, _SOL_SOCKET, 0, "allow")
    refuse_when(2, _SOCKOPT_REFUSED)
    for which in sorted({which for _, which in _WHO_CALLS.values()}):
        label(f"which-{which}")  # (which, who): only "this process", named as 0 or by its pid
        emit(_LD_ABS_W, _arg_low(0))
        emit(_JEQ, which, 0, "deny")
        emit(_LD_ABS_W, _arg_low(1))
        emit(_JEQ, 0, "allow", "own-pid-loaded")
    label("own-or-0")
    emit(_LD_ABS_W, _arg_low(0))
    emit(_JEQ, 0, "allow", "own-pid-loaded")
    label("own-pid")
    emit(_LD_ABS_W, _arg_low(0))
    label("own-pid-loaded")
    emit(_JEQ, own_pid, "allow", "deny")
    label("nosys")
    emit(_RET, _ERRNO | errno.ENOSYS)
    label("allow")
    emit(_RET, _ALLOW)
    label("deny")
    emit(_RET, _ERRNO | errno.EPERM)
    label("kill")
    emit(_RET, _KILL_PROCESS)

    def offset(at: int, target: object) -> int:
        if isinstance(target, int):
            return target
        jump = labels[str(target)] - (at + 1)
        assert 0 <= jump <= 255, f"jump to {target!r} out of range"
        return jump

    return b"".join(
        struct.pack("<HBBI", op, offset(at, jt), offset(at, jf), k)
        for at, (op, jt, jf, k) in enumerate(code)
    )


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def install(own_pid: int) -> None:
    """Install the filter on the calling thread's process; raises ``OSError`` if the kernel refuses.

    Called from a single-threaded process, so every later thread inherits it.
    ``no_new_privs`` is set first, as an unprivileged filter requires.
    """
    if not supported():
        raise OSError(errno.ENOSYS, f"no seccomp table for {platform.machine()!r}")
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    libc.prctl.argtypes = [ctypes.c_int, ulong, ulong, ulong, ulong]  # unused ones must be 0
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    filters = program(own_pid)
    buffer = ctypes.create_string_buffer(filters, len(filters))
    prog = _Program(len(filters) // 8, ctypes.addressof(buffer))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")

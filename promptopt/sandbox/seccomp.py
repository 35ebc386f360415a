"""The seccomp filter a sandboxed call installs on itself before running proposed code.

A classic BPF program over ``struct seccomp_data`` that refuses, with an errno
(so Python raises ``PermissionError``/``OSError`` in the candidate's frame):

- sockets other than ``AF_UNIX`` (``EAFNOSUPPORT``);
- new processes: ``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD`` or
  with a namespace flag (``clone3`` answers ``ENOSYS``, so the C library falls
  back to ``clone``, which can be checked); threads stay allowed;
- ``execve``/``execveat``, ``ptrace``, other processes' memory, signals to any
  process but the caller, mounts, namespaces, keyrings, BPF, perf, io_uring,
  kernel modules, ``kexec`` and the rest of the table below.

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
_SOCKET, _CLONE, _CLONE3 = 41, 56, 435
_SIGNAL_CALLS = (62, 234, 129, 297)  # kill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo
_REFUSED = {
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "execveat": 322,
    "ptrace": 101,
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
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
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
    "mount_setattr": 442,
}

_AF_UNIX = 1
_CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
_CLONE_NAMESPACES |= 0x40000000  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET

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
    """The filter as ``struct sock_filter[]`` bytes; signals may go to ``own_pid`` only."""
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
    emit(_JEQ, _CLONE, "clone", 0)
    emit(_JEQ, _CLONE3, "nosys", 0)
    for number in _SIGNAL_CALLS:
        emit(_JEQ, number, "signal", 0)
    for number in sorted(_REFUSED.values()):
        emit(_JEQ, number, "deny", 0)
    emit(_RET, _ALLOW)
    label("socket")
    emit(_LD_ABS_W, _arg_low(0))
    emit(_JEQ, _AF_UNIX, "allow", 0)
    emit(_RET, _ERRNO | errno.EAFNOSUPPORT)
    label("clone")
    emit(_LD_ABS_W, _arg_low(0))
    emit(_JSET, _CLONE_NAMESPACES, "deny", 0)
    emit(_JSET, _CLONE_THREAD, "allow", "deny")
    label("signal")
    emit(_LD_ABS_W, _arg_low(0))
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

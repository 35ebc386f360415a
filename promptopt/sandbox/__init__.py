"""The sandbox for trainable code: LLM-proposed source runs only in a limited child process.

:class:`Sandbox` keeps one warm worker per run, inside bubblewrap's namespaces
(:mod:`promptopt.sandbox.isolation`), and forks one child per call from it
(:mod:`promptopt.sandbox.worker`). Before the candidate's source is compiled,
the child puts on itself a seccomp filter (:mod:`promptopt.sandbox.seccomp`:
no network, no new task, no exec, no shared memory, no process named but its
own), Landlock rules (:mod:`promptopt.sandbox.landlock`: write only its own
folder) and its limits (time, address space, files, descriptors). Every
outcome of the candidate code is a :class:`SandboxResult`; nothing the code
does raises in the caller, or reaches another call. The parent's side is
:mod:`promptopt.sandbox.runner` and :mod:`promptopt.sandbox.worker_process`.
"""

from promptopt.sandbox.runner import (
    DEFAULT_ENV_ALLOW,
    Sandbox,
    SandboxError,
    SandboxKind,
    SandboxResult,
    scrubbed_environment,
)

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "Sandbox",
    "SandboxError",
    "SandboxKind",
    "SandboxResult",
    "scrubbed_environment",
]

"""The sandbox for trainable code: LLM-proposed source runs only in a limited child process.

:class:`Sandbox` starts one throw-away ``python -I -S`` child per call, with a
scrubbed environment, a wall-clock timeout that kills the whole process group,
an address-space limit and an audit hook that refuses writes outside a fresh
temp folder, spawning, network and ``ctypes``. Every outcome of the candidate
code is a :class:`SandboxResult`; nothing the code does raises in the caller.
The parent lives in :mod:`promptopt.sandbox.runner`, the child in
:mod:`promptopt.sandbox.child`.
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

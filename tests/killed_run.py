"""Run an optimization in a child process that dies mid-run, as a SIGKILL would leave it.

``kill_after(n, task=..., model=..., ...)`` writes and runs a script that optimizes
``task`` with ``model`` (a function ``request -> answer`` imported in the child) as
the task model and exits with status 9, no clean-up, on its ``n + 1``-th task call:
the run store then holds what a killed run leaves, status "running".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = """
import os, sys
for folder in {paths!r}:
    sys.path.insert(0, folder)
{imports}
from promptopt.api import optimize
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
calls = 0
def crashing(request):
    global calls
    calls += 1
    if calls > {after}:
        os._exit(9)  # the process dies where it stands, as a killed run would
    return {model}(request)
optimize({task!r}, backends={{"task": FakeBackend(crashing), {others}}})
"""


def kill_after(
    calls: int, *, task: Path, model: str, imports: str, others: str = "",
    paths: tuple[Path, ...] = (), timeout: float = 300,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Optimize ``task`` in a child that exits with 9 on its task call ``calls + 1``.

    ``imports`` are the child's import lines (``model`` must be one of their names),
    ``others`` more ``"role": backend`` entries, ``paths`` folders put on its path
    (promptopt's checkout and this folder always are).
    """
    script = Path(task).parent / f"killed_after_{calls}.py"
    script.write_text(_SCRIPT.format(
        paths=[str(p) for p in (*paths, ROOT, Path(__file__).parent)], imports=imports, after=calls, model=model,
        task=str(task), others=others,
    ), encoding="utf-8")  # fmt: skip
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 9, proc.stderr
    return proc

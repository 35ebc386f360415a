"""The README's traced-workflow example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_traced_workflow_example_runs():
    section = README.read_text().split("## Traced workflows", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert sorted(scope["graphs"]) == ["style", "tidy.code"]
    assert scope["digraph"].number_of_nodes() >= 3

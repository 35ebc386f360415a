"""The README's traced-workflow example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_traced_workflow_example_runs(tmp_path):
    section = README.read_text().split("## Traced workflows", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # The example lives in a file, as a user's would: trainable nodes read their own source.
    example = tmp_path / "traced_workflow.py"
    example.write_text(code)
    scope: dict = {}
    exec(compile(code, str(example), "exec"), scope)
    assert sorted(scope["graphs"]) == ["style", "tidy.code"]
    assert scope["digraph"].number_of_nodes() >= 3


def test_every_built_in_optimizer_has_a_row_with_its_true_defaults():
    from promptopt import plugins
    from promptopt.optimizers import registry

    section = README.read_text().split("### Optimizers", 1)[1].split("\n- ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \|(.*)$", section, re.M)}
    assert sorted(rows) == plugins.optimizers.available(own=True)  # a plugin has no row here
    for name, row in rows.items():
        defaults = row.split("|")[3]  # after source, edits, needs
        fields = registry.get(name).Config.model_fields
        listed = re.findall(r"`(\w+)` ([^,|]+)", defaults)
        assert listed, f"{name}: no defaults listed"
        for field, value in listed:
            assert str(fields[field].default) == value.strip(), f"{name}.{field}"

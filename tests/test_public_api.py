"""The names promptopt exports are exactly the ones the README promises."""

from __future__ import annotations

import re
from pathlib import Path

import promptopt

README = Path(__file__).resolve().parents[1] / "README.md"


def test_exports_match_the_readme():
    block = re.search(r"<!-- public-api -->(.*?)<!-- /public-api -->", README.read_text(), re.S)
    assert block is not None
    promised = set(re.findall(r"`([A-Za-z_]+)`", block.group(1)))
    assert promised == set(promptopt.__all__)
    for name in promptopt.__all__:
        assert getattr(promptopt, name) is not None


def test_optimize_runs_from_inside_a_running_event_loop(tmp_path: Path) -> None:
    """As in a notebook: synchronous ``optimize()`` called where a loop already runs."""
    import asyncio

    from small_task import write_small_task

    from promptopt.llm.fakes import FakeBackend

    path = write_small_task(tmp_path, '  task: "openai:gpt-4o-mini"')
    fake = FakeBackend(model="positive")
    backends = {"task": fake, "optimizer": fake, "judge": fake}

    async def notebook_cell() -> promptopt.OptimizeResult:
        asyncio.get_running_loop()  # a loop runs here
        return promptopt.optimize(path, output=tmp_path / "runs", backends=backends)

    result = asyncio.run(notebook_cell())
    assert result.scores["seed_val"] is not None
    assert result.run_dir.is_dir()

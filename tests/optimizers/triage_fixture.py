"""A copy of the tasks/triage example workflow to optimize, and a deterministic fake of its model.

(A module of its own, not ``conftest``: test folders each have a conftest, and
``from conftest import`` would pick whichever was imported first.)

``triage_task(...)`` copies ``tasks/triage`` (and the ``tasks/tickets`` data it
reads) into the test's folder and rewrites its task file: small splits, the fake
model, no response cache, runs under the test's folder. ``triage_model`` answers
the topic step with a fixed topic, and the classify step (the request whose
choices are the teams) like a model that leans to one team until it is told to
read carefully or shown an exemplar; then it knows every message's team (it
reads them from the data).
"""

from __future__ import annotations

import csv
import itertools
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptopt.llm.types import LLMRequest

TASKS = Path(__file__).resolve().parents[2] / "tasks"
CAREFUL = "Read the whole message carefully"

with (TASKS / "tickets" / "tickets.csv").open(newline="", encoding="utf-8") as _f:
    TEAM_OF = {row["message"]: row["team"] for row in csv.DictReader(_f)}


def route_source(body: str) -> str:
    """Source for the workflow's trainable ``route`` node: its own ``def`` line, then ``body``.

    ``body`` may use the arguments ``team`` (the model's answer) and ``message``.
    """
    source = (TASKS / "triage" / "workflow.py").read_text(encoding="utf-8")
    (header,) = [line for line in source.splitlines() if line.startswith("def route(")]
    return header + "\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"


TEAMS = ("billing", "shipping", "technical", "account")


def triage_model(request: LLMRequest) -> str:
    """Any other step gets its first choice (or a phrase); the classify step a team,
    right once guided."""
    if tuple(request.choices) != TEAMS:
        return request.choices[0] if request.choices else "help with the account"
    asked = request.messages[-1].content
    truth = next((team for message, team in TEAM_OF.items() if message in asked), None)
    guided = CAREFUL in request.messages[0].content or any(
        m.role == "assistant" for m in request.messages
    )
    if truth is not None and guided:
        return truth
    return "technical"


@pytest.fixture
def triage_task(tmp_path: Path) -> Callable[..., Path]:
    counter = itertools.count()

    def make(
        *,
        optimizer: str | list[Any] = "exemplars",
        config: dict[str, Any] | None = None,
        split: dict[str, int] | None = None,
        models: dict[str, Any] | None = None,
        max_calls: int = 400,
    ) -> Path:
        root = tmp_path / f"tasks{next(counter)}"
        shutil.copytree(TASKS / "triage", root / "triage")
        shutil.copytree(TASKS / "tickets", root / "tickets")
        path = root / "triage" / "task.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["optimizer"] = (  # a list: the stages of a composition, as a task file lists them
            optimizer
            if isinstance(optimizer, list)
            else {"name": optimizer, "config": config or {}}
        )
        spec["data"]["split"] = split or {"train": 8, "val": 8, "test": 4, "seed": 0}
        spec["models"] = models or {"task": "fake:triage"}
        spec["cache"] = {"policy": "off"}
        spec["budget"] = {"max_calls": max_calls}
        spec["output"] = str(root / "traces")
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return make

"""The triage example workflow (tasks/triage/workflow.py) runs its three steps on a fake model."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from promptopt import FakeBackend, Sandbox, optimize, trace
from promptopt.graph import op_of
from promptopt.llm.fakes import fake_llm
from promptopt.llm.types import LLMRequest
from promptopt.task.data import load_splits
from promptopt.task.loader import load_task
from promptopt.task.program import make_program

TRIAGE = Path(__file__).resolve().parents[2] / "tasks" / "triage"
TEAMS = ("billing", "shipping", "technical", "account")


@pytest.fixture(scope="module")
def workflow() -> Iterator[ModuleType]:
    sys.path.insert(0, str(TRIAGE))
    try:
        import workflow as module

        yield module
    finally:
        sys.path.remove(str(TRIAGE))


def answering(team: str, topic: str = "payment") -> Any:
    """A fake model: ``topic`` to the topic step, ``team`` to the classify step."""

    def handler(request: LLMRequest) -> str:
        return team if request.choices == TEAMS else topic

    return handler


async def test_run_asks_the_topic_then_the_team(workflow: ModuleType) -> None:
    llm = fake_llm(answering("technical", topic="bug"))
    answer = await workflow.run({"message": "The app freezes on start."}, llm)
    assert answer == "technical"
    topic_request, classify_request = llm.backend.requests
    assert topic_request.choices == ("payment", "delivery", "bug", "profile")
    assert topic_request.messages[-1].content == "The app freezes on start."
    assert classify_request.choices == TEAMS
    assert classify_request.messages[0].role == "system"
    assert classify_request.messages[0].content == workflow.instruction.peek()
    assert classify_request.messages[-1].content == "The app freezes on start.\n(Topic: bug)"


async def test_exemplars_become_earlier_chat_turns(workflow: ModuleType) -> None:
    shots = [{"inputs": {"message": "Where is my parcel?"}, "output": "shipping"}]
    llm = fake_llm(answering("shipping"))
    team = await workflow.classify("Late box.", "", "Pick a team.", shots, llm)
    assert team == "shipping"
    roles = [(m.role, m.content) for m in llm.backend.requests[0].messages]
    assert roles == [
        ("system", "Pick a team."),
        ("user", "Where is my parcel?"),
        ("assistant", "shipping"),
        ("user", "Late box."),
    ]


@pytest.mark.parametrize(
    ("model_team", "message", "expected"),
    [
        ("account", "I want a refund for last month.", "billing"),
        ("billing", "The courier never came.", "shipping"),
        ("technical", "I forgot my password.", "account"),
        ("billing", "The app shows error 42.", "technical"),
        ("shipping", "Can you change my plan?", "shipping"),  # no rule: the model's team
    ],
)
def test_route_rules_override_the_model(
    workflow: ModuleType, model_team: str, message: str, expected: str
) -> None:
    assert workflow.route(model_team, "profile", message) == expected


async def test_one_run_is_traced_with_its_parameters(workflow: ModuleType) -> None:
    llm = fake_llm(answering("account", topic="profile"))
    with trace() as t:
        answer = await workflow.run({"message": "Please update my email address."}, llm)
    assert answer == "account"
    names = [n.name for n in t.nodes]
    for expected in ("topic", "classify", "route", "instruction", "exemplars"):
        assert expected in names, names
    route = next(n for n in t.nodes if n.name == "route")
    parents = {t.nodes[i].name for i in route.parents}
    assert {"topic", "classify"} <= parents, parents


def test_route_source_runs_alone_in_the_sandbox(workflow: ModuleType) -> None:
    """Rewritten code runs without module globals: the seed source must too."""
    source = op_of(workflow.route).param.peek()
    assert source.startswith("def route(")
    result = Sandbox(timeout_s=20).run(source, "route", ["account", "bug", "Refund me please"])
    assert result.ok, result.error
    assert result.value == "billing"
    json.dumps(result.value)


def test_task_file_loads_with_split_sizes_that_fit_a_short_run() -> None:
    spec = load_task(TRIAGE / "task.yaml")
    assert spec.program.entry == "workflow:run"
    assert spec.optimizer.name == "exemplars"
    splits = load_splits(spec)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 20, 40)
    for split in (splits.train, splits.val, splits.test):
        assert {e.target for e in split} == set(TEAMS)


def test_the_program_discovers_instruction_exemplars_and_route_code() -> None:
    spec = load_task(TRIAGE / "task.yaml")
    program = make_program(spec.program, base_dir=spec.base_dir)
    assert dict(program.kinds) == {
        "instruction": "text",
        "exemplars": "exemplars",
        "route.code": "code",
    }
    assert program.seed_params()["route.code"].startswith("def route(")


def test_optimize_runs_the_workflow_end_to_end_on_a_fake_model(tmp_path: Path) -> None:
    """A fake that answers 'shipping' until shown exemplars, then 'account': the search must
    see the difference and keep a candidate with exemplars."""

    def handler(request: LLMRequest) -> str:
        if request.choices != TEAMS:
            return "profile"
        shown = sum(m.role == "assistant" for m in request.messages)
        return "account" if shown else "shipping"

    result = optimize(
        TRIAGE / "task.yaml", output=tmp_path, backends={"task": FakeBackend(handler)}
    )
    assert set(result.best.params) == {"instruction", "exemplars", "route.code"}
    assert result.best.params["exemplars"]
    assert result.scores["best_val"] > result.scores["seed_val"]  # exemplars are what helps

"""Snapshots of what MCTS and OPRO send their optimizer model, so a change to a meta-prompt
shows in review (rerun with UPDATE_SNAPSHOTS=1 when the change is meant), and how MCTS, OPRO
and GEPA name the text they rewrite."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from ladder_fixture import ladder_model, ladder_task, rewriting_model

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend
from promptopt.optimizers.base import PROMPT_SHAPE
from promptopt.optimizers.shown import role_of

SNAPSHOTS = Path(__file__).parent / "snapshots"
CONFIGS = {
    "mcts": {"iterations": 1, "expand_width": 1, "depth_limit": 1, "batch_size": 3},
    "opro": {"steps": 1, "per_step": 1, "exemplars": 2},
}


def rendered(requests) -> str:
    return (
        "\n".join(
            f"==== request {number}\n" + "\n".join(f"--- {m.role}\n{m.content}" for m in r.messages)
            for number, r in enumerate(requests, 1)
        )
        + "\n"
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
async def test_meta_prompt_snapshot(name, tmp_path):
    optimizer_model = FakeBackend(rewriting_model("a"))
    await aoptimize(
        ladder_task(tmp_path, optimizer=name, config=CONFIGS[name]),
        backends={"task": FakeBackend(ladder_model({"P": 5})), "optimizer": optimizer_model},
    )
    text = rendered(optimizer_model.requests)
    snapshot = SNAPSHOTS / f"{name}_meta_prompt.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(text, encoding="utf-8")
    expected = snapshot.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                "snapshot",
                "rendered",
            )
        )
        pytest.fail(f"the {name} meta-prompt changed (UPDATE_SNAPSHOTS=1 if meant):\n{diff}")
    # shapes, never a sample answer the model could copy
    assert "<START>" in text and "e.g." not in text.lower() and "example of a reply" not in text


@pytest.mark.parametrize("name", [*sorted(CONFIGS), "gepa"])
async def test_a_prompt_programs_system_text_is_named_with_what_it_is(name, tmp_path):
    optimizer_model = FakeBackend(rewriting_model("a"))
    config = CONFIGS.get(name, {"iterations": 1, "minibatch": 2})
    await aoptimize(
        ladder_task(tmp_path, optimizer=name, config=config),
        backends={"task": FakeBackend(ladder_model({"P": 5})), "optimizer": optimizer_model},
    )
    asked = [m.content for r in optimizer_model.requests for m in r.messages if m.role == "user"]
    role = "the system message: the instructions the language model reads before every input"
    assert asked and all(f'a text named "system" ({role})' in text for text in asked)


def test_a_workflow_parameter_has_no_prompt_role():
    class State:
        program_description = "Route tickets (the Python workflow 'app:route')"

    assert role_of(State(), "system") == ""  # type: ignore[arg-type]
    State.program_description = f"Classify. ({PROMPT_SHAPE})"
    assert role_of(State(), "user").startswith(" (the user message")  # type: ignore[arg-type]
    assert role_of(State(), "instruction") == ""  # type: ignore[arg-type]

"""Every registered optimizer optimizes the example workflow through the same contract.

The workflow is tasks/triage (two LLM nodes and a trainable code node); the task
model is a deterministic fake, the optimizer model a scripted queue planned per
optimizer. A newly registered optimizer fails here until its script is added, so
every optimizer is held to the same checks: it finishes, proposes at least one
candidate over the discovered parameters, ends on one of its own proposals that
beats the seed, spends its whole script, and leaves traces in the run store.

The fake task model answers every message right once it is guided (an exemplar
shown, or told to read carefully) and leans to one team otherwise; each script
guides it. So the seed scores below 1 and a proposal strictly better exists: the
best must be a proposal, not the seed (``best_val >= seed_val`` would hold even
for an optimizer that never found anything, the seed being in the history).
"""

from __future__ import annotations

import json

import pytest
from triage_fixture import CAREFUL, route_source, triage_model

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
from promptopt.optimizers import registry
from promptopt.store import RunStore

KEEP_ALL = route_source("return team")

# Per optimizer: its config for a short run and the optimizer model's planned replies.
SCRIPTS: dict[str, tuple[dict, list[str]]] = {
    "exemplars": ({"k": 1, "num_sets": 2, "mutations": 1, "per_step": 2}, []),
    "optoprime": (
        {"steps": 2},
        [
            json.dumps(
                {
                    "reasoning": "the model guesses",
                    "answer": "",
                    "suggestion": {"instruction": f"{CAREFUL}, then name the team."},
                }
            ),
            json.dumps(
                {
                    "reasoning": "keyword rules override right answers",
                    "answer": "",
                    "suggestion": {"route.code": KEEP_ALL},
                }
            ),
        ],
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", registry.available())
async def test_every_optimizer_runs_on_the_example_workflow(name, triage_task):
    assert name in SCRIPTS, f"optimizer {name!r} is registered but has no script in this test"
    config, replies = SCRIPTS[name]
    optimizer_model = ScriptedBackend(replies)
    task_model = FakeBackend(triage_model)
    result = await aoptimize(
        triage_task(optimizer=name, config=config),
        backends={"task": task_model, "optimizer": optimizer_model, "judge": optimizer_model},
    )
    assert optimizer_model.pending == 0
    assert result.stopped == "optimizer finished"
    assert set(result.best.params) == {"instruction", "exemplars", "route.code"}
    assert result.scores["seed_val"] < 1.0
    assert result.scores["best_val"] > result.scores["seed_val"]
    assert result.best.params != result.seed.params
    assert result.scores["best_test"] is not None
    with RunStore.open(result.run_dir) as store:
        proposed = [c for c in store.candidates() if c["origin"] == name]
        assert proposed, f"{name} proposed nothing"
        assert all(set(c["params"]) == set(result.best.params) for c in proposed)
        assert result.best.id in {c["id"] for c in proposed}
        rows = store.trace_rows()
        assert {r["split"] for r in rows} == {"val", "test"}
        assert all(r["nodes"] >= 5 for r in rows)  # 3 params, gist, classify, route

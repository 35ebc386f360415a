"""Every registered optimizer optimizes the example workflow through the same contract.

Each registered optimizer, promptopt's own and any plugin installed beside them,
first passes the conformance kit plugin authors run (``promptopt.testing.check_optimizer``).
Then each of promptopt's own runs the example workflow with a script of its own.
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
One composition (OPRO, then exemplar selection on its winner) is held to the same
checks, each stage proposing from the previous stage's best.
"""

from __future__ import annotations

import json

import pytest
from triage_fixture import CAREFUL, route_source, triage_model

from promptopt import plugins
from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
from promptopt.optimizers import registry
from promptopt.store import RunStore
from promptopt.testing import check_optimizer

KEEP_ALL = route_source("return team")


def guided(number: int) -> str:
    """A new instruction that makes the fake task model read carefully, wrapped as a
    rewriting optimizer asks; read as feedback, it is just text."""
    return f"<START>{CAREFUL}, then name the team (version {number}).<END>"


def _rewrite(prompt: str, **said: str) -> str:
    return json.dumps({"analysis": "it guesses", "modification": "read first", **said,
                       "prompt": prompt})  # fmt: skip


# Per optimizer: its config for a short run and the optimizer model's planned replies.
SCRIPTS: dict[str, tuple[dict, list[str]]] = {
    "exemplars": ({"k": 1, "num_sets": 2, "mutations": 1, "per_step": 2}, []),
    "mcts": (
        {"iterations": 1, "expand_width": 2, "depth_limit": 1, "batch_size": 2},
        [guided(i) for i in range(4)],  # feedback, rewrite (x 2 batches): any order reads
    ),
    "opro": ({"steps": 2, "per_step": 2}, [guided(i) for i in range(4)]),
    # one iteration: the seed on the 8 training rows, one reflection, the child on the same 8
    "gepa": ({"iterations": 1, "minibatch": 8}, [guided(0)]),
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
    # two rounds, each a rewrite then four judge votes (the judge is the same scripted model)
    "spo": (
        {"rounds": 2},
        [
            _rewrite(f"{CAREFUL}, then name the team."),
            "B",
            "B",
            "A",
            "A",
            _rewrite(f"{CAREFUL}. Name one team."),
            "A",
            "A",
            "A",
            "B",
        ],
    ),  # fmt: skip
    # one expansion: one summary (every failure is in the 'other' bucket), two children;
    # the first child makes no error, which ends the search
    "promst": (
        {"n_children": 2, "expansions": 2, "predictor": False},
        [
            "The model guesses a team without reading the message.",
            _rewrite(f"{CAREFUL}, then name the team."),
            _rewrite("Name the team."),
        ],
    ),  # fmt: skip
}


# promptopt's own optimizers; a plugin installed beside them is held to the conformance kit
BUILT_IN = plugins.optimizers.available(own=True)


@pytest.mark.parametrize("name", registry.available())
def test_every_registered_optimizer_passes_the_conformance_kit(name):
    check_optimizer(registry.get(name))


@pytest.mark.parametrize("name", [*BUILT_IN, "opro+exemplars"])
async def test_every_optimizer_runs_on_the_example_workflow(name, triage_task):
    stages = name.split("+")
    for stage in stages:
        assert stage in SCRIPTS, f"optimizer {stage!r} is registered but has no script in this test"
    optimizer_model = ScriptedBackend([reply for stage in stages for reply in SCRIPTS[stage][1]])
    task_model = FakeBackend(triage_model)
    result = await aoptimize(
        triage_task(optimizer=[{"name": s, "config": SCRIPTS[s][0]} for s in stages]),
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
        starts = [store.candidates()[0]["id"]] + [
            d["payload"]["seed"] for d in store.decisions() if d["kind"] == "stage"
        ]
        assert len(starts) == len(stages)
        for stage, start in zip(stages, starts, strict=True):
            proposed = [c for c in store.candidates() if c["origin"] == stage]
            assert proposed, f"{stage} proposed nothing"
            assert all(set(c["params"]) == set(result.best.params) for c in proposed)
            # each stage builds on its own seed: the previous stage's best
            assert {c["parent_id"] for c in proposed} <= {start} | {c["id"] for c in proposed}
        all_proposed = {c["id"] for c in store.candidates() if c["origin"] in stages}
        assert result.best.id in all_proposed  # the best is a proposal, not the seed
        # each candidate read from an optimizer reply and scored on validation is linked to
        # that reply (the preference export's optimizer level); exemplar sets come from none
        replies = {c["key"]: c for c in store.llm_calls() if c["tag"] == "optimizer"}
        links = {p["candidate_id"]: p["call_key"] for p in store.proposals()}
        scored = {e["candidate_id"] for e in store.evaluations(split="val")}
        params = {c["id"]: c["params"] for c in store.candidates()}
        for c in store.candidates():
            if c["origin"] in stages and c["origin"] != "exemplars" and c["id"] in scored:
                assert links.get(c["id"]) in replies, f"{c['origin']}: {c['id']} has no reply"
                new_text = c["params"]["instruction"]
                if new_text != params[c["parent_id"]]["instruction"]:  # its reply rewrote it
                    reply = replies[links[c["id"]]]["response"]["text"]
                    assert json.dumps(new_text)[1:-1] in reply or new_text in reply
        rows = store.trace_rows()
        # probes of training batches (MCTS's error batches) leave traces too
        assert {"val", "test"} <= {r["split"] for r in rows} <= {"train", "val", "test"}
        assert all(r["nodes"] >= 5 for r in rows)  # 3 params, gist, classify, route

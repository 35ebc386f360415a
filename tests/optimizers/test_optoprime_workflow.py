"""OptoPrime optimizes the example workflow end to end: scripted (exact) and on the real SmolLM2."""

from __future__ import annotations

import json

import pytest
from triage_fixture import CAREFUL, route_source, triage_model

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
from promptopt.store import RunStore

NEW_INSTRUCTION = f"{CAREFUL}, then name the team: billing, shipping, technical or account."
MORE_RULES = route_source("""
    text = message.lower()
    rules = [
        (("refund", "invoice", "charged", "charge", "payment", "subscription", "price"), "billing"),
        (("delivery", "package", "courier", "parcel", "tracking", "shipped", "arrived"), "shipping"),
        (("password", "log in", "login", "email address", "username", "two-factor"), "account"),
        (("error", "crash", "bug", "freezes", "upload", "sync"), "technical"),
    ]
    for words, chosen in rules:
        if any(word in text for word in words):
            return chosen
    return team
""")
REPLIES = [
    "Sure! More keyword rules would catch what the model misses.",  # no JSON at all
    json.dumps(
        {
            "reasoning": "the model says 'technical' to everything",
            "answer": "",
            "suggestion": {"route": MORE_RULES},
        }
    ),  # the repair, naming the node  # fmt: skip
    "{'reasoning': 'the model guesses', 'answer': '', "
    f"'suggestion': {{'#instruction': {NEW_INSTRUCTION!r},}}}}",  # Python quotes, trailing comma
]


async def optimize_scripted(triage_task):
    """OptoPrime (2 steps) on a triage copy; ``triage_task`` makes the task file."""
    optimizer_model = ScriptedBackend(REPLIES)
    result = await aoptimize(
        triage_task(optimizer="optoprime", config={"steps": 2}),
        backends={"task": FakeBackend(triage_model), "optimizer": optimizer_model},
    )
    return result, optimizer_model


async def test_scripted_optoprime_fixes_the_instruction_then_the_code(triage_task):
    result, optimizer_model = await optimize_scripted(triage_task)
    assert optimizer_model.pending == 0 and len(optimizer_model.requests) == 3
    # the first request shows the workflow's traced computation
    first = optimizer_model.requests[0].messages[-1].content
    for part in ("#Code", "classify", "route.code", "#Feedback", "expected"):
        assert part in first
    schema = json.loads(optimizer_model.requests[0].json_schema)
    # in the order to write them: a constrained model reasons before it suggests
    assert list(schema["properties"]) == ["reasoning", "answer", "suggestion"]
    assert set(schema["properties"]["suggestion"]["properties"]) == {
        "instruction", "exemplars", "route.code",
    }  # fmt: skip
    repair = optimizer_model.requests[1].messages
    assert repair[-2].role == "assistant" and repair[-2].content == REPLIES[0]
    assert result.best.params["route.code"] == MORE_RULES
    assert result.best.params["instruction"] == NEW_INSTRUCTION
    assert result.best.params["exemplars"] == []
    with RunStore.open(result.run_dir) as store:
        val = {c: s for c, s in _val_scores(store).items()}
    seed, step1, step2 = (val[c] for c in _ids_in_order(store_path=result.run_dir))
    assert seed == result.scores["seed_val"] < step1 < step2 == result.scores["best_val"] == 1.0
    assert result.scores["best_test"] == 1.0
    stats = result.optimizer_stats
    counted = ("calls", "repair_calls", "unparseable", "repaired", "proposals", "failed_steps")
    assert [stats[k] for k in counted] == [3, 1, 1, 1, 2, 0]
    # the optimizer model's own calls and tokens (fakes count words) are in the result
    spent = result.optimizer_usage
    asked = sum(len(m.content.split()) for r in optimizer_model.requests for m in r.messages)
    assert (spent["calls"], spent["prompt_tokens"]) == (3, asked)
    assert spent["completion_tokens"] == sum(len(reply.split()) for reply in REPLIES)
    assert result.usage["calls"] > spent["calls"]  # the task model's calls come on top
    with RunStore.open(result.run_dir) as store:
        steps = [c for c in store.candidates() if c["origin"] == "optoprime"]
        assert [c["meta"]["updated"] for c in steps] == [["route.code"], ["instruction"]]
        assert [c["meta"]["repaired"] for c in steps] == [True, False]
        # the rewritten route ran in the sandbox and its trace records the new code
        (trace,) = store.traces(candidate_id=result.best.id, split="test")[:1]
        code = next(n for n in trace.nodes if n.name == "route.code")
        route = next(n for n in trace.nodes if n.name == "route")
        assert code.output == MORE_RULES and route.error is None
        calls = {c["key"]: c["request"] for c in store.llm_calls() if c["tag"] == "optimizer"}
        links = store.proposals()
    # each proposed candidate is linked to the optimizer reply it was read from: the first
    # step's repair reply, then the second step's reply
    assert [link["candidate_id"] for link in links] == [c["id"] for c in steps]
    assert [calls[link["call_key"]]["messages"] for link in links] == [
        [[m.role, m.content] for m in optimizer_model.requests[i].messages] for i in (1, 2)
    ]


def _val_scores(store: RunStore) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for row in store.evaluations(split="val"):
        totals.setdefault(row["candidate_id"], []).append(row["score"])
    return {c: sum(v) / len(v) for c, v in totals.items()}


def _ids_in_order(*, store_path) -> list[str]:
    with RunStore.open(store_path) as store:
        return [c["id"] for c in store.candidates() if c["origin"] in ("seed", "optoprime")]


async def test_scripted_optoprime_is_deterministic(triage_task):
    first, _ = await optimize_scripted(triage_task)
    second, _ = await optimize_scripted(triage_task)
    assert first.best.id == second.best.id
    assert first.scores == second.scores


@pytest.mark.real
@pytest.mark.parametrize("constrained", [False, True], ids=["free", "schema"])
async def test_optoprime_on_smollm2_completes_and_survives_bad_json(triage_task, constrained):
    """Free replies: SmolLM2-135M breaks the JSON and the run goes on. Constrained to the
    reply's schema (llama.cpp grammar): every reply that ends before ``max_tokens`` parses
    and is judged on its values (with no sample reply to copy, SmolLM2 fills the schema's
    strings to their bounds, and a reply cut at ``max_tokens`` cannot close its JSON)."""
    task = triage_task(
        optimizer="optoprime",
        config={
            "steps": 2,
            "examples_per_step": 1,
            "max_tokens": 300,
            "json_schema": constrained,
        },  # fmt: skip
        split={"train": 2, "val": 4, "test": 2, "seed": 0},
        models={"task": "local:smollm2"},
        max_calls=60,
    )
    result = await aoptimize(task)
    stats = result.optimizer_stats
    # both steps asked the model (a repair call each at most), whatever it answered
    assert 2 <= stats["calls"] == stats["replies"] <= 2 + stats["repair_calls"] <= 4
    # each step ended in a proposal or a counted failure, never in an exception
    assert stats["proposals"] + stats["failed_steps"] == 2
    assert stats["failed_steps"] == 0 or stats["unparseable"] + stats["rejected"] > 0
    with RunStore.open(result.run_dir) as store:  # the reported best is what was measured
        best_rows = store.evaluations(candidate_id=result.best.id, split="val")
    assert best_rows, "the best candidate was never scored on validation"
    mean = sum(r["score"] for r in best_rows) / len(best_rows)
    assert result.scores["best_val"] == pytest.approx(mean)
    assert result.scores["best_test"] is not None
    with RunStore.open(result.run_dir) as store:
        optimizer_calls = [c for c in store.llm_calls() if not c["request"].get("choices")]
        assert len(optimizer_calls) >= stats["replies"]
    if constrained:
        cut = [c for c in optimizer_calls
               if c["response"] and c["response"]["usage"][1] >= c["request"]["max_tokens"]]  # fmt: skip
        assert stats["unparseable"] <= len(cut)


def reference_task_calls(result) -> list[dict]:
    with RunStore.open(result.run_dir) as store:
        return [c for c in store.llm_calls() if not c["cached"] and c["request"].get("choices")]


def test_a_crashed_workflow_run_resumes_without_repeating_calls_or_traces(triage_task, tmp_path):
    import asyncio
    from pathlib import Path

    from killed_run import kill_after

    task = triage_task(optimizer="optoprime", config={"steps": 2})
    reference, _ = asyncio.run(optimize_scripted(lambda **_: task))
    # killed in the middle of scoring step 2's candidate
    kill_after(20, task=task, model="triage_model", paths=(Path(__file__).parent,),
               imports="from triage_fixture import triage_model\n"
                       "from test_optoprime_workflow import REPLIES",
               others='"optimizer": ScriptedBackend(REPLIES)')  # fmt: skip
    (run_dir,) = [p for p in (task.parent.parent / "traces").iterdir() if p != reference.run_dir]
    # seed: 16 calls; step 1 changed only route.code, so its classify requests were the
    # seed's (replayed); step 2 asked the optimizer its third question, then died at call 21
    task_model, optimizer_model = FakeBackend(triage_model), ScriptedBackend([])
    resumed = asyncio.run(
        aoptimize(task, resume=run_dir, backends={"task": task_model, "optimizer": optimizer_model})
    )
    assert resumed.best.params == reference.best.params
    assert resumed.scores == reference.scores
    # the three optimizer calls made before the crash were replayed, not asked again
    assert optimizer_model.requests == []
    assert len(task_model.requests) == len(reference_task_calls(reference)) - 20
    with RunStore.open(run_dir) as store, RunStore.open(reference.run_dir) as full:
        rows, expected = store.trace_rows(), full.trace_rows()
        keys = [(r["candidate_id"], r["split"], r["example_id"]) for r in rows]
        assert len(keys) == len(set(keys))  # no example's trace stored twice
        assert sorted(keys) == sorted(
            (r["candidate_id"], r["split"], r["example_id"]) for r in expected
        )
        paid = [c for c in store.llm_calls() if not c["cached"]]
        assert len(paid) == len([c for c in full.llm_calls() if not c["cached"]])

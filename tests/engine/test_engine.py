"""The engine loop end to end with a fake model: search, budget, store, cache, resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fake_sentiment import picky_model
from killed_run import kill_after

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend
from promptopt.optimizers.exemplars import Exemplars
from promptopt.store import RunStore
from promptopt.task.program import shown_exemplars


async def test_exemplar_search_beats_the_seed_and_records_everything(task_file, picky_backend):
    result = await aoptimize(task_file(), backends={"task": picky_backend})
    # the seed always answers "positive"; balanced exemplars make the fake read the words
    assert result.scores["seed_val"] < result.scores["best_val"] == 1.0
    assert result.scores["seed_test"] < result.scores["best_test"] == 1.0
    assert result.invalid["best_test"] == 0
    labels = {e["output"] for e in result.best.params["exemplars"]}
    assert labels == {"positive", "negative"}
    assert result.best_prompt_path.read_text().startswith("# system")
    with RunStore.open(result.run_dir) as store:
        assert store.status() == "finished"
        assert len(store.candidates()) >= 7  # seed + 4 random + 2 mutations
        backend_calls = [c for c in store.llm_calls() if not c["cached"]]
        assert len(backend_calls) == len(picky_backend.requests)
        assert store.latest_checkpoint() is not None


async def test_the_search_fits_the_budget_and_says_why_it_ended_early(task_file, picky_backend):
    # the seed costs 20 calls, each candidate at most 20: 50 calls pay for one candidate, and
    # the exemplar search sizes itself to that instead of running into the budget
    result = await aoptimize(task_file(max_calls=50), backends={"task": picky_backend})
    assert result.usage["calls"] <= 50
    assert result.stopped == "optimizer finished"
    [stage] = result.stages
    assert stage["share"] == 30 and stage["candidates"] >= 1  # its set, then calibrations
    assert stage["spent"] <= 20 and stage["steps"] < stage["planned_steps"]
    assert stage["ended_early"] == "what was left of its share could not pay for another step"
    assert result.scores["seed_test"] is not None  # test scoring sits outside the search budget


def unsized(monkeypatch) -> None:
    """The exemplar optimizer proposing its sets whatever the budget, as a plugin may."""
    monkeypatch.setattr(Exemplars, "_fit", lambda self, state: None)


async def test_a_budget_stop_keeps_every_candidate_scored_on_all_of_val(
    task_file, picky_backend, monkeypatch
):
    # seed 20 calls, then a step of candidates behind one gate that wakes in order: the first
    # gets all 20 of its calls, the next only 5 before the budget (45) refuses one
    unsized(monkeypatch)
    task = task_file(max_calls=45, racing=False)  # every candidate on every row
    result = await aoptimize(task, backends={"task": picky_backend})
    assert result.stopped.startswith("budget")
    with RunStore.open(result.run_dir) as store:
        decisions = [(d["kind"], d["step"], d["payload"]) for d in store.decisions()]
        seed_id = store.candidates()[0]["id"]
    # the interrupted step is decided on what it scored whole (not dropped), then the stop
    (kind, step, cut), (stop, stop_step, _) = decisions[:2]
    assert (kind, step, stop, stop_step) == ("step", 1, "stop", 1)
    [whole] = cut["evaluated"]  # one candidate reached every validation example
    assert whole["id"] != seed_id and whole["val"] > result.scores["seed_val"]
    assert cut["best"] == whole["id"]  # and it was chosen over the seed
    assert cut["partial"] and whole["id"] not in cut["partial"]  # the others are marked
    assert result.best.id not in cut["partial"]


async def test_second_identical_run_is_served_from_the_cache(task_file):
    first_backend, second_backend = FakeBackend(_picky()), FakeBackend(_picky())
    path = task_file(cache="readwrite")
    first = await aoptimize(path, backends={"task": first_backend})
    second = await aoptimize(path, backends={"task": second_backend})
    assert first_backend.requests and second_backend.requests == []
    assert second.usage["calls"] == 0 and second.usage["cache_hits"] > 0
    assert second.best.params == first.best.params
    assert second.scores == first.scores


def test_resume_repeats_no_paid_call_and_ends_the_same(task_file, tmp_path):
    path = task_file()
    reference_backend = FakeBackend(_picky())
    reference = asyncio.run(aoptimize(path, backends={"task": reference_backend}))
    total = len(reference_backend.requests)

    kill_after(
        45,
        task=path,
        model="picky_model",
        imports="from fake_sentiment import picky_model",
        paths=(Path(__file__).parent,),
    )
    (run_dir,) = [
        p for p in (path.parent / "traces").iterdir() if p.is_dir() and p != reference.run_dir
    ]
    with RunStore.open(run_dir) as store:
        assert store.status() == "running"  # it never got to say anything else
        paid_before = len([c for c in store.llm_calls() if not c["cached"]])
    assert paid_before == 45
    resumed_backend = FakeBackend(_picky())
    resumed = asyncio.run(aoptimize(path, resume=run_dir, backends={"task": resumed_backend}))
    assert paid_before + len(resumed_backend.requests) == total
    assert resumed.best.params == reference.best.params
    assert resumed.scores == reference.scores


def _picky():
    return picky_model


async def test_evaluate_scores_the_seed_or_a_runs_best(task_file, picky_backend):
    from promptopt.evaluate import evaluate

    path = task_file()
    seed = await evaluate(path, split="test", backends={"task": picky_backend})
    run = await aoptimize(path, backends={"task": picky_backend})
    best = await evaluate(path, run=run.run_dir, split="test", backends={"task": picky_backend})
    assert seed.n == best.n == 20
    assert seed.score == run.scores["seed_test"]
    assert best.score == run.scores["best_test"] == 1.0
    assert best.label.startswith("best of")


async def test_the_candidates_of_a_step_are_scored_together_one_after_another(task_file):
    starts: list[tuple[str, ...]] = []
    in_flight: list[tuple[str, ...]] = []
    overlaps = 0

    async def model(request):
        nonlocal overlaps
        shown = tuple(m.content for m in request.messages[:-1])  # the candidate's prefix
        starts.append((*shown, request.messages[-1].content))
        overlaps += any(other != shown for other in in_flight)
        in_flight.append(shown)
        for _ in range(3):
            await asyncio.sleep(0)
        in_flight.remove(shown)
        return picky_model(request)

    result = await aoptimize(task_file(), backends={"task": FakeBackend(model)})
    with RunStore.open(result.run_dir) as store:
        val = {r["inputs"]["text"] for r in store.evaluations(split="val")}
    order = [start[:-1] for start in starts if start[-1] in val]
    runs = [key for i, key in enumerate(order) if i == 0 or order[i - 1] != key]
    assert overlaps > 0  # the next candidate's examples start while the last ones finish
    assert len(runs) == len(set(runs))  # but one candidate's examples never interleave


async def test_each_evaluation_names_the_request_its_output_answered(task_file, picky_backend):
    # the preference export reads a pair's prompt from this link: the exact messages sent
    result = await aoptimize(task_file(), backends={"task": picky_backend})
    with RunStore.open(result.run_dir) as store:
        requests = {c["key"]: c["request"] for c in store.llm_calls()}
        evaluations = store.evaluations()
        candidates = {c["id"]: c["params"] for c in store.candidates()}
    assert evaluations and all(e["request_key"] in requests for e in evaluations)
    for e in evaluations[:40]:
        sent = requests[e["request_key"]]["messages"]
        assert sent[-1] == ["user", f"Review: {e['inputs']['text']}"]
        shown = [m[1] for m in sent if m[0] == "assistant"]
        value = candidates[e["candidate_id"]]["exemplars"]
        assert shown == [x["output"] for x in shown_exemplars(value, e["inputs"])]

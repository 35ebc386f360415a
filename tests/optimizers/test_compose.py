"""Composition: ``optimizer: [opro, exemplars]`` runs both stages in one run, one budget, one store.

The task is the ladder (10 validation items, a prompt program with a trainable
``system`` text and ``exemplars``); its fake model reaches level
``LEVELS[system] + BONUS[each exemplar shown]``, so every candidate's validation
score is known by hand. OPRO proposes the scripted texts one per step; the
exemplar stage then draws sets of one training row (items 100 and 101) on top of
OPRO's winner.
"""

from __future__ import annotations

import re

import pytest
from ladder_fixture import label, ladder_task

from promptopt.api import aoptimize, plan
from promptopt.errors import ConfigError, TaskFileError
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
from promptopt.llm.types import LLMRequest, LLMResponse
from promptopt.optimizers.exemplars import Exemplars
from promptopt.optimizers.opro import OPRO as OPROOptimizer
from promptopt.optimizers.spo import SPO
from promptopt.optimizers.stages import merged_stats, stages_of
from promptopt.report.facts import RunFacts
from promptopt.store import RunStore
from promptopt.task.loader import load_task

LEVELS = {"P": 3, "Q": 6, "R": 5}
BONUS = {"item 100": 1, "item 101": 3}
ITEM = re.compile(r"item (\d+)")
OPRO = {"name": "opro", "config": {"steps": 2, "per_step": 1, "exemplars": 0}}
EXEMPLARS = {
    "name": "exemplars",
    "config": {"k": 1, "num_sets": 2, "mutations": 0, "per_step": 2, "selectors": [],
               "source": "labelled", "calibrate": False},
}  # fmt: skip
SHOW_100 = [{"inputs": {"text": "item 100"}, "output": "positive"}]
SHOW_101 = [{"inputs": {"text": "item 101"}, "output": "negative"}]


def item(request: LLMRequest) -> int:
    return int(ITEM.search(request.messages[-1].content).group(1))


def composed_model(request: LLMRequest) -> str:
    shown = [m.content for m in request.messages[1:-1] if m.role == "user"]
    level = LEVELS.get(request.messages[0].content, 0) + sum(BONUS.get(s, 0) for s in shown)
    i = item(request)
    return label(i) if i % 10 < level else label(i + 1)


def composed_task(root, *, max_calls: int, stages=(OPRO, EXEMPLARS)):
    # racing off: the budget's cuts below fall where every candidate is scored on every row
    return ladder_task(root, optimizer=list(stages), max_calls=max_calls, n_train=2,
                       trainable=("system", "exemplars"), racing=False)  # fmt: skip


def paid(store: RunStore) -> list[dict]:
    """The calls the run's budget paid for: answered by a backend, not replayed, not test."""
    return [c for c in store.llm_calls() if c["budgeted"] and not c["cached"] and c["response"]]


async def test_two_stages_run_in_order_in_one_budget_and_one_store(tmp_path):
    # seed 10 + OPRO 2 x (1 optimizer call + 10) + exemplars 2 sets x 10 = 52 calls
    task = composed_task(tmp_path, max_calls=52)
    optimizer_model = ScriptedBackend(["<START>Q<END>", "<START>R<END>"])
    task_model = FakeBackend(composed_model)
    result = await aoptimize(task, backends={"task": task_model, "optimizer": optimizer_model})

    assert optimizer_model.pending == 0
    assert result.stopped == "optimizer finished" and result.steps == 3
    assert result.best.params == {"system": "Q", "exemplars": SHOW_101}
    assert result.scores["seed_val"] == pytest.approx(0.3)
    assert result.scores["best_val"] == pytest.approx(0.9)  # Q's 6 + item 101's 3
    with RunStore.open(result.run_dir) as store:
        rows = {c["id"]: c for c in store.candidates()}
        found = [(c["origin"], c["step"], c["params"]["system"], c["params"]["exemplars"])
                 for c in rows.values() if c["origin"] != "test"]  # fmt: skip
        assert found[:3] == [("seed", 0, "P", []), ("opro", 1, "Q", []), ("opro", 2, "R", [])]
        assert sorted(map(str, found[3:])) == sorted(
            map(str, [("exemplars", 3, "Q", SHOW_100), ("exemplars", 3, "Q", SHOW_101)])
        )
        (winner_id,) = [i for i, c in rows.items() if c["params"] == {"system": "Q",
                                                                      "exemplars": []}]  # fmt: skip
        assert {c["parent_id"] for c in rows.values() if c["origin"] == "exemplars"} == {winner_id}
        scores = {}
        for e in store.evaluations():
            if e["split"] == "val":
                scores.setdefault(e["candidate_id"], []).append(e["score"])
        # OPRO's winner is the exemplar stage's seed: scored once, never again
        assert len(scores[winner_id]) == 10
        by_set = {str(rows[i]["params"]["exemplars"]): sum(s) / 10 for i, s in scores.items()
                  if rows[i]["origin"] == "exemplars"}  # fmt: skip
        assert by_set == {str(SHOW_100): pytest.approx(0.7), str(SHOW_101): pytest.approx(0.9)}
        decisions = [(d["step"], d["kind"], d["payload"]["stage"]) for d in store.decisions()]
        assert decisions == [(1, "step", 0), (2, "step", 0), (3, "stage", 1), (3, "step", 1)]
        handover = store.decisions()[2]["payload"]
        assert handover["optimizer"] == "exemplars" and handover["seed"] == winner_id
        assert handover["seed_val"] == pytest.approx(0.6)
        assert RunFacts.load(store).optimizer == "opro -> exemplars"
        last = store.latest_checkpoint()[1]
        assert (last["stage"], last["optimizer"], last["best_id"]) == (
            1,
            "exemplars",
            result.best.id,
        )
        spent = paid(store)
    assert len(spent) == 52 == result.usage["calls"]
    assert [c["tag"] for c in spent].count("optimizer") == 2
    # the task model saw Q without exemplars exactly 10 times (its validation rows)
    bare_q = [
        r for r in task_model.requests if r.messages[0].content == "Q" and len(r.messages) == 2
    ]
    assert len(bare_q) == 10


async def test_a_budget_stop_in_the_second_stage_keeps_what_it_scored_whole(tmp_path, monkeypatch):
    # seed 10 + OPRO 22 (its share: 0.63 of the 35 left) = 32; the exemplar stage, proposing
    # its two sets whatever the budget (as a plugin may), needs 20 and 13 are left: the first
    # set is scored on all 10 rows and wins, the second is cut partway and never chosen
    monkeypatch.setattr(Exemplars, "_fit", lambda self, state: None)
    task = composed_task(tmp_path, max_calls=45, stages=({**OPRO, "share": 0.63}, EXEMPLARS))
    optimizer_model = ScriptedBackend(["<START>Q<END>", "<START>R<END>"])
    result = await aoptimize(
        task, backends={"task": FakeBackend(composed_model), "optimizer": optimizer_model}
    )
    assert result.stopped.startswith("budget") and result.steps == 3
    shown = [{"inputs": {"text": "item 100"}, "output": "positive"}]
    assert result.best.params == {"system": "Q", "exemplars": shown}  # above OPRO's 0.6
    assert result.scores["best_val"] == pytest.approx(0.7)
    with RunStore.open(result.run_dir) as store:
        assert len(paid(store)) == 45
        decisions = store.decisions()
        kinds = [(d["step"], d["kind"], d["payload"]["stage"]) for d in decisions]
        assert kinds == [(1, "step", 0), (2, "step", 0), (3, "stage", 1), (3, "step", 1),
                         (3, "stop", 1)]  # fmt: skip
        cut = decisions[3]["payload"]
        assert [e["id"] for e in cut["evaluated"]] == [result.best.id]
        assert len(cut["partial"]) == 1 and result.best.id not in cut["partial"]


def leaning_model(request: LLMRequest) -> LLMResponse:
    """Scores the choices, leaning to 'positive': uncalibrated it always answers that."""
    negative = label(item(request)) == "negative"
    scores = {"positive": -1.0, "negative": -1.4 if negative else -2.6}
    ranked = tuple(scores[c] for c in request.choices)
    return LLMResponse(text="positive", choice_logprobs=ranked)


async def test_a_share_stop_in_the_first_stage_hands_over_to_the_next(tmp_path):
    # seed 10, then 22 left: OPRO plans 22 (two steps of one proposal and its optimizer call)
    # and the exemplar stage 20, so OPRO's share is 11. Its first reply repeats the seed (a
    # no-op, asked again): 2 optimizer calls, then 9 of Q's 10 validation rows fit in its
    # share. The exemplar stage still gets what is left (11: one set) and then calibrates,
    # its answers replayed from the run.
    exemplars = {"name": "exemplars", "config": {**EXEMPLARS["config"], "calibrate": True}}
    task = composed_task(tmp_path, max_calls=32, stages=(OPRO, exemplars))
    optimizer_model = ScriptedBackend(["<START>P<END>", "<START>Q<END>"])
    task_model = FakeBackend(leaning_model)
    result = await aoptimize(task, backends={"task": task_model, "optimizer": optimizer_model})

    first, second = result.stages
    assert (first["share"], first["spent"]) == (11, 11)
    assert first["stopped"].startswith("share") and first["candidates"] == 0
    assert first["ended_early"] == "its share of the budget was spent"
    assert second["share"] == 11 and second["spent"] == 10  # one set on the 10 rows
    assert result.stopped == "optimizer finished"
    assert result.scores["seed_val"] == pytest.approx(0.5)
    # offsets -3 and -2 still answer one label; -1.5 is the first to answer both right
    assert result.best.params["calibration"] == {"positive": -1.5}
    assert result.scores["best_val"] == pytest.approx(1.0)
    with RunStore.open(result.run_dir) as store:
        assert len(paid(store)) == 31
        kinds = [(d["step"], d["kind"], d["payload"]["stage"]) for d in store.decisions()]
        assert kinds[:3] == [(1, "stop", 0), (3, "stage", 1), (3, "step", 1)]
        assert store.decisions()[1]["payload"]["share"] == 11


@pytest.mark.parametrize(
    ("stages", "field", "reason"),
    [
        (["opro", "exemplar"], r"optimizer\[1\]\.name", "did you mean 'exemplars'"),
        (["opro", {"name": "exemplars", "config": {"k": 0}}], r"optimizer\[1\]\.config\.k", ""),
        (["opro", {"config": {"k": 1}}], r"optimizer\[1\]\.name", "names its optimizer"),
        (["opro", "spo"], r"optimizer\[1\]\.name", "pairwise"),
        (["opro", 3], r"optimizer\[1\]", "an optimizer name or"),
        ([], "optimizer", "at least one"),
    ],
)
def test_a_bad_stage_is_named_by_its_place_in_the_list(tmp_path, stages, field, reason):
    task = composed_task(tmp_path, max_calls=10, stages=stages)
    with pytest.raises(TaskFileError, match=rf"task\.yaml: {field}: .*{reason}"):
        load_task(task)


def test_a_single_name_or_mapping_is_one_stage(tmp_path):
    one = load_task(ladder_task(tmp_path / "a", optimizer="opro", config={"steps": 1}))
    named = load_task(ladder_task(tmp_path / "b", optimizer=["opro"]))
    assert [s.name for s in one.stages] == [s.name for s in named.stages] == ["opro"]
    assert one.optimizer.config == {"steps": 1}
    both = load_task(composed_task(tmp_path / "c", max_calls=10))
    assert [(s.name, s.config.get("k")) for s in both.stages] == [("opro", None), ("exemplars", 1)]


def test_the_engine_refuses_stages_that_select_differently_and_prefixes_their_counts():
    with pytest.raises(ConfigError, match="pairwise"):
        stages_of([OPROOptimizer(), SPO()])
    with pytest.raises(ConfigError, match="at least one"):
        stages_of([])
    one = OPROOptimizer()
    assert stages_of(one) == (one,)
    assert "steps" in merged_stats([one])  # one stage: its own keys, as before
    twice = merged_stats([OPROOptimizer(), Exemplars(), OPROOptimizer()])
    assert "opro#0 steps" in twice and "opro#2 steps" in twice and "opro steps" not in twice


def test_the_dry_run_adds_up_the_stages(tmp_path):
    # OPRO: 2 steps x 1 version x 10 val; exemplars: 2 sets x 10 val; plus the seed's 10
    estimate = plan(composed_task(tmp_path, max_calls=1000))
    assert estimate.optimization_calls == 10 + 20 + 20
    assert ("optimizer", "opro -> exemplars") in estimate.rows


async def test_the_set_scored_whole_before_a_budget_stop_is_calibrated(tmp_path, monkeypatch):
    # as above, with calibration on: the free step after the stop calibrates the set scored on
    # every row (it is the best), never the one the budget cut partway
    monkeypatch.setattr(Exemplars, "_fit", lambda self, state: None)
    exemplars = {"name": "exemplars", "config": {**EXEMPLARS["config"], "calibrate": True}}
    task = composed_task(tmp_path, max_calls=45, stages=({**OPRO, "share": 0.63}, exemplars))
    optimizer_model = ScriptedBackend(["<START>Q<END>", "<START>R<END>"])
    result = await aoptimize(
        task, backends={"task": FakeBackend(composed_model), "optimizer": optimizer_model}
    )
    assert result.stopped.startswith("budget")
    assert {k: v for k, v in result.best.params.items() if k != "calibration"} == {
        "system": "Q", "exemplars": SHOW_100}  # fmt: skip
    with RunStore.open(result.run_dir) as store:
        cut = next(d["payload"] for d in store.decisions() if d["payload"].get("partial"))
        calibrated = {c["parent_id"] for c in store.candidates()
                      if c["meta"].get("kind") == "calibration"}  # fmt: skip
    [whole] = [e["id"] for e in cut["evaluated"]]
    assert whole in calibrated and not calibrated & set(cut["partial"])

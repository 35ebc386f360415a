"""Racing: candidates scored on a growing prefix of validation, dropped once plainly worse.

The ladder task with 40 validation rows: system text ``X`` answers the rows with
``i % 10 < LEVELS[X]`` right, so each candidate's row-by-row score against the seed ``P``
(level 5) is known by hand: ``W`` (0) loses half the rows and wins none, ``B`` (9) wins
four rows in ten and loses none, ``E`` (5) ties every row.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any, ClassVar

import pytest
import yaml
from ladder_fixture import label, ladder_model, ladder_task
from pydantic import BaseModel

from promptopt.llm.fakes import FakeBackend
from promptopt.optimizers.base import Proposal, SearchState
from promptopt.racing import RaceRule, race_order
from promptopt.store import RunStore
from promptopt.task.data import Example

LEVELS = {"P": 5, "W": 0, "B": 9, "E": 5}


class Scripted:
    """Proposes the system texts ``W``, ``B`` and ``E`` (or ``systems``) in one step, then stops."""

    name: ClassVar[str] = "scripted"
    Config: ClassVar[type[BaseModel]] = BaseModel
    racing: ClassVar[bool] = True

    def __init__(self, *, free: bool = False, systems: str = "WBE") -> None:
        self.observed: list[str] = []
        self.done = False
        self.free = free  # proposals whose answers cost nothing: never raced
        self.systems = systems

    async def propose(self, state: SearchState, *, llm: Any, rng: random.Random) -> list[Proposal]:
        if self.done:
            return []
        self.done = True
        return [Proposal(params={**state.seed.params, "system": s}, parent_id=state.seed.id,
                         free=self.free) for s in self.systems]  # fmt: skip

    def observe(self, state: SearchState, results: list) -> None:
        self.observed += [r.candidate.params["system"] for r in results]

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        return 3 * n_val


def racing_task(root, *, racing: bool) -> Any:
    path = ladder_task(root, optimizer="exemplars")
    rows = [json.dumps({"text": f"item {i}", "label": label(i)}) for i in range(40)]
    (root / "val.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec["racing"] = {"enabled": racing, "min_rows": 10}
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


async def search(root, *, racing: bool, free: bool = False, systems: str = "WBE"):
    from promptopt.session import build_parts
    from promptopt.task import load_task

    spec = load_task(racing_task(root, racing=racing))
    optimizer = Scripted(free=free, systems=systems)
    with RunStore.create(root / "runs", task={}) as store:
        parts = build_parts(spec, store=store, backends={"task": FakeBackend(ladder_model(LEVELS))})
        outcome = await parts.engine(store).search(
            optimizer, parts.program.seed_params(), trainable=parts.program.trainable,
            description="",
        )  # fmt: skip
        await parts.aclose()
        decisions = [d["payload"] for d in store.decisions() if d["kind"] == "step"]
    return outcome, optimizer, decisions


async def test_worse_candidates_are_dropped_and_a_better_one_never(tmp_path):
    outcome, optimizer, [step] = await search(tmp_path, racing=True)
    # W is worse than the seed; E ties the seed, but B, racing beside it, leads and wins
    # four rows in ten that E loses: both are dropped before the end, B never
    dropped = {d["id"]: d for d in step["dropped"]}
    assert len(dropped) == 2 and all(d["rows"] < 40 and d["wins"] == 0 and d["p"] <= 0.05
                                     for d in dropped.values())  # fmt: skip
    by_system = {e.candidate.params["system"]: e for e in outcome.history}
    assert set(by_system) == {"P", "B"}  # W and E never joined the history
    assert len(by_system["B"].results) == 40  # scored whole
    assert optimizer.observed == ["B"]
    assert outcome.best.candidate.params["system"] == "B"


async def test_a_candidate_alone_is_raced_against_the_incumbent_only(tmp_path):
    # E alone ties the seed on every row: nothing says it is worse, so it runs to the end
    outcome, optimizer, [step] = await search(tmp_path, racing=True, systems="E")
    assert "dropped" not in step and optimizer.observed == ["E"]


async def test_the_best_is_the_same_as_without_racing(tmp_path):
    raced, _, _ = await search(tmp_path / "on", racing=True)
    whole, optimizer, [step] = await search(tmp_path / "off", racing=False)
    assert "dropped" not in step and optimizer.observed == ["W", "B", "E"]
    assert raced.best.candidate.params == whole.best.candidate.params
    assert raced.best.score == whole.best.score == pytest.approx(0.9)


async def test_a_free_proposal_is_never_raced(tmp_path):
    # the exemplar optimizer's calibrations re-read answers already in the run: racing them
    # would save nothing and could drop the best calibration
    outcome, optimizer, [step] = await search(tmp_path, racing=True, free=True)
    assert "dropped" not in step and optimizer.observed == ["W", "B", "E"]


def rows(scores: list[float]) -> dict[str, float]:
    return {str(i): v for i, v in enumerate(scores)}


def test_the_sign_test_drops_only_what_is_worse_with_confidence():
    rule = RaceRule(confidence=0.95, min_rows=10)
    incumbent = {str(i): 1.0 for i in range(10)}
    # worse on five rows, tied on five: p = 1/32 <= 0.05
    assert rule.verdict(rows([0.0] * 5 + [1.0] * 5), incumbent) == (True, 0, 5, 1 / 32)
    # worse on four: p = 1/16, not yet
    assert rule.verdict(rows([0.0] * 4 + [1.0] * 6), incumbent)[0] is False
    # better wherever it differs: never dropped, whatever the count
    low = {str(i): 0.0 for i in range(10)}
    assert rule.verdict(rows([1.0] * 10), low) == (False, 10, 0, 1.0)
    # rows the incumbent was not scored on do not count
    assert rule.verdict(rows([0.0] * 10), {"3": 1.0})[1:3] == (0, 1)


def test_the_looks_and_the_order_are_fixed():
    assert RaceRule(min_rows=10).looks(35) == [10, 20, 30, 35]
    assert RaceRule(min_rows=10).looks(10) == [10]
    val = [Example(str(i), {"text": str(i)}, "x") for i in range(30)]
    assert race_order(val, 3) == race_order(val, 3) != race_order(val, 4)
    assert sorted(e.id for e in race_order(val, 3)) == sorted(e.id for e in val)


def test_the_exemplar_search_races_only_the_sets_it_will_not_calibrate():
    from promptopt.optimizers.base import Candidate
    from promptopt.optimizers.exemplars import Exemplars

    def state(choices: tuple[str, ...]) -> SearchState:
        async def evaluate(params, examples):  # never called: the pool is too small
            raise AssertionError

        return SearchState(seed=Candidate({"exemplars": []}), trainable=("exemplars",),
                           train=(), val=(), program_description="", evaluate=evaluate,
                           choices=choices, kinds={"exemplars": "exemplars"})  # fmt: skip

    for config, choices, races in (({}, ("a", "b"), False), ({"calibrate": False}, ("a", "b"), True),
                                   ({}, (), True)):  # fmt: skip
        optimizer = Exemplars(config)
        asyncio.run(optimizer.propose(state(choices), llm=None, rng=random.Random(0)))
        assert optimizer.racing is races

"""The exemplar optimizer's selectors, the pool fed by probes, and calibration after the budget."""

from __future__ import annotations

import json
import random
from typing import Any, ClassVar

from fake_sentiment import WORDS
from pydantic import BaseModel
from test_calibration import leaning_model

from promptopt.api import aoptimize
from promptopt.engine import Engine
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest
from promptopt.optimizers.base import Proposal, SearchState
from promptopt.optimizers.exemplars import Exemplars
from promptopt.session import build_parts
from promptopt.store import RunStore
from promptopt.task import load_task


async def test_a_diverse_set_comes_first_and_nearest_exemplars_after_the_search(
    task_file, picky_backend
):
    result = await aoptimize(task_file(), backends={"task": picky_backend})
    with RunStore.open(result.run_dir) as store:
        made = [c for c in store.candidates() if c["meta"].get("kind") not in (None, "calibration")]
        val = store.evaluations(candidate_id=made[0]["parent_id"], split="val")
    kinds = [c["meta"]["kind"] for c in made]
    # config: 4 random sets and 2 mutations, 2 proposals a step
    assert kinds == ["diverse", "random", "random", "random", "random", "mutation", "mutation",
                     "nearest"]  # fmt: skip
    assert made[0]["step"] == 1 and made[-1]["step"] > made[-2]["step"]
    diverse_set = made[0]["params"]["exemplars"]
    assert isinstance(diverse_set, list) and len(diverse_set) == 2
    assert {e["output"] for e in diverse_set} == {"positive", "negative"}  # balanced by label
    spec = made[-1]["params"]["exemplars"]
    assert spec["select"] == "nearest" and spec["k"] == 2
    # its pool: the 20 labelled training rows, then every validation row once (a row is
    # never shown its own answer), with its label
    pool = [(json.dumps(i["inputs"]), i["output"]) for i in spec["pool"]]
    assert len(pool) == 40 and len(set(pool)) == 40
    assert {(json.dumps(e["inputs"]), e["target"]) for e in val} <= set(pool)


async def test_calibration_still_runs_when_the_budget_stops_the_search(task_file, monkeypatch):
    monkeypatch.setattr(Exemplars, "_fit", lambda self, state: None)  # run into the budget
    backend = FakeBackend(leaning_model)
    # the seed (20) and three sets (60) fit; the fourth set's calls do not
    result = await aoptimize(task_file(max_calls=90), backends={"task": backend})
    assert result.stopped.startswith("budget")
    with RunStore.open(result.run_dir) as store:
        calibrated = [c for c in store.candidates() if c["meta"].get("kind") == "calibration"]
        paid = [c for c in store.llm_calls() if not c["cached"]]
    assert calibrated, "calibration was skipped"
    assert len(paid) <= 90 + 2 * 20  # the search's budget, plus seed and best on test
    assert len(backend.requests) == len(paid)  # calibration asked the model nothing
    assert result.best.params.get("calibration") and result.scores["best_val"] == 1.0


class ProbeThenStop:
    """Probes the seed on the training rows once, then records the pool it sees."""

    name: ClassVar[str] = "probe-then-stop"
    Config: ClassVar[type[BaseModel]] = BaseModel
    seen: ClassVar[list[int]] = []

    async def propose(self, state: SearchState, *, llm: Any, rng: random.Random) -> list[Proposal]:
        before = len(state.pool)
        await state.evaluate(state.seed.params, state.train[:6])
        ProbeThenStop.seen[:] = [before, len(state.pool)]
        return []

    def observe(self, state: SearchState, results: list) -> None:
        pass

    def estimate_calls(self, *, n_train: int, n_val: int) -> int:
        return 6


async def test_probe_evaluations_feed_the_exemplar_pool(task_file, tmp_path):
    def always_right(request: LLMRequest) -> str:
        negative = any(w in request.messages[-1].content for w in WORDS["negative"])
        return "negative" if negative else "positive"

    spec = load_task(task_file())
    with RunStore.create(tmp_path / "runs", task={}) as store:
        parts = build_parts(spec, store=store, backends={"task": FakeBackend(always_right)})
        engine: Engine = parts.engine(store)
        await engine.search(ProbeThenStop(), parts.program.seed_params(),
                            trainable=parts.program.trainable, description="")  # fmt: skip
        await parts.aclose()
    before, after = ProbeThenStop.seen
    assert before == 20 and after == 26  # the six probed rows' correct answers joined it


async def test_nearest_k_sets_how_many_exemplars_each_input_is_shown(task_file, picky_backend):
    path = task_file()
    path.write_text(path.read_text().replace("per_step: 2}", "per_step: 2, nearest_k: 3}"))
    result = await aoptimize(path, backends={"task": picky_backend})
    with RunStore.open(result.run_dir) as store:
        made = [c for c in store.candidates() if c["meta"].get("kind") not in (None, "calibration")]
    sets = [c for c in made if c["meta"]["kind"] != "nearest"]
    (nearest,) = [c for c in made if c["meta"]["kind"] == "nearest"]
    assert {len(c["params"]["exemplars"]) for c in sets} == {2}  # the sets keep k
    assert nearest["meta"]["k"] == 3 and nearest["params"]["exemplars"]["k"] == 3
    # the system line and the input, after two worked examples (a set) or three (nearest)
    turns = {len(r.messages) for r in picky_backend.requests}
    assert turns == {2, 2 + 2 * 2, 2 + 2 * 3}

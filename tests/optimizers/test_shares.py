"""Stage shares: the README's ``[opro, exemplars]`` at ``max_calls: 731`` on 100 validation rows.

The seed costs 100 calls; the 631 left are split in proportion to what the stages plan at
their configuration (OPRO: 4 steps of 4 proposals, each an optimizer call and 100 rows, 1616
calls; exemplars: 14 sets of 100 rows, 1400), so OPRO's share is 338: one step of three
proposals (303). The 35 it leaves pass on, and the exemplar stage gets 328: three sets.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
from pathlib import Path

import pytest
import yaml
from killed_run import kill_after
from ladder_fixture import label, ladder_task
from rich.console import Console

from promptopt.api import aoptimize, plan
from promptopt.cli import main
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest
from promptopt.report.facts import RunFacts
from promptopt.report.show import print_run
from promptopt.store import RunStore

README_STAGES = [{"name": "opro", "config": {"steps": 4}}, "exemplars"]
ITEM = re.compile(r"item (\d+)")


def readme_task(root: Path, *, stages=README_STAGES, max_calls: int = 731) -> Path:
    path = ladder_task(root, optimizer=list(stages), max_calls=max_calls, n_train=50,
                       trainable=("system", "exemplars"))  # fmt: skip
    rows = [json.dumps({"text": f"item {i}", "label": label(i)}) for i in range(100)]
    (root / "val.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec["racing"] = False  # every candidate on every row: the counts below are exact
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def task_model(request: LLMRequest) -> str:
    """System ``T<n>`` answers rows ``i % 10 < n`` right (the seed ``P``: 3), one more per
    exemplar shown."""
    system = request.messages[0].content
    level = int(system[1:]) if system.startswith("T") else 3
    level += sum(1 for m in request.messages[1:-1] if m.role == "user")
    i = int(ITEM.search(request.messages[-1].content).group(1))
    return label(i) if i % 10 < level else label(i + 1)


def optimizer_model() -> FakeBackend:
    counter = itertools.count(4)
    return FakeBackend(lambda request: f"<START>T{next(counter)}<END>")


def test_the_dry_run_shows_each_stage_share_and_its_steps(tmp_path):
    rows = dict(plan(readme_task(tmp_path)).rows)
    assert rows["stage 1: opro"] == "share 338 calls; 1 step of 303 calls (planned, before racing)"
    assert rows["stage 2: exemplars"] == (
        "share 293 calls; 1 step of 200 calls (planned, before racing)"
    )


async def test_the_exemplar_stage_gets_its_share_and_what_opro_left(tmp_path):
    result = await aoptimize(
        readme_task(tmp_path), backends={"task": FakeBackend(task_model),
                                         "optimizer": optimizer_model()},
    )  # fmt: skip
    first, second = result.stages
    assert (first["share"], first["spent"], first["candidates"]) == (338, 303, 3)
    assert first["ended_early"] == "what was left of its share could not pay for another step"
    assert second["share"] == 631 - 303  # its own 293 and the 35 OPRO left
    # three sets, each on the 100 rows but those it shows as exemplars
    assert 294 <= second["spent"] <= 300
    assert result.usage["calls"] == 100 + 303 + second["spent"] <= 731
    with RunStore.open(result.run_dir) as store:
        sets = [c for c in store.candidates()
                if c["origin"] == "exemplars" and c["meta"].get("kind") != "calibration"]  # fmt: skip
        rows = {c["id"]: len(store.evaluations(candidate_id=c["id"], split="val")) for c in sets}
    assert len(sets) >= 2 and all(n >= 98 for n in rows.values())  # each on (nearly) every row
    assert result.best.params["exemplars"]  # and the best came from that stage
    # promptopt show says the same from the store
    with RunStore.open(result.run_dir) as store:
        facts = RunFacts.load(store)
    assert facts.stages == list(result.stages)
    console = Console(file=io.StringIO(), width=200)
    print_run(facts, console)
    shown = console.file.getvalue()
    assert "stage 1 opro: 3 candidates scored in 1 step (4 planned); 303 of its 338 calls" in shown


def test_a_share_that_cannot_pay_for_one_step_is_an_error_before_any_call(tmp_path, capsys):
    stages = [{"name": "opro", "config": {"steps": 4}},
              {"name": "exemplars", "share": 0.1}]  # fmt: skip
    task = readme_task(tmp_path, stages=stages)
    assert main(["optimize", str(task), "--no-probe"]) == 2
    error = capsys.readouterr().err
    assert "stage 2 (exemplars) gets 64 of budget.max_calls=731" in error
    assert "needs 100 calls" in error
    assert not (tmp_path / "traces").exists()  # no run was even started
    assert main(["optimize", str(task), "--dry-run"]) == 2


def test_resume_after_a_kill_keeps_each_stage_share_and_spending(tmp_path):
    path = readme_task(tmp_path)
    reference = asyncio.run(
        aoptimize(path, backends={"task": FakeBackend(task_model), "optimizer": optimizer_model()})
    )
    kill_after(
        550,
        task=path,
        model="task_model",  # in the second stage
        imports="from test_shares import task_model, optimizer_model",
        others='"optimizer": optimizer_model()',
        paths=(Path(__file__).parent,),
    )
    (run_dir,) = [p for p in (tmp_path / "traces").iterdir()
                  if p.is_dir() and p != reference.run_dir]  # fmt: skip
    resumed = asyncio.run(aoptimize(path, resume=run_dir, backends={
        "task": FakeBackend(task_model), "optimizer": optimizer_model()}))  # fmt: skip
    assert resumed.stages == reference.stages
    assert resumed.best.params == reference.best.params
    with RunStore.open(run_dir) as store:
        paid = [c for c in store.llm_calls() if c["budgeted"] and not c["cached"] and c["response"]]
    assert len(paid) == reference.usage["calls"]  # the killed process's and the resumed one's


@pytest.mark.parametrize("given", [None, 0.5])
def test_the_shares_add_up_to_what_the_seed_leaves(tmp_path, given):
    stages = [{"name": "opro", "config": {"steps": 4}, **({"share": given} if given else {})},
              "exemplars"]  # fmt: skip
    rows = dict(plan(readme_task(tmp_path, stages=stages)).rows)
    shares = [int(rows[f"stage {i}: {name}"].split()[1]) for i, name in ((1, "opro"),
                                                                        (2, "exemplars"))]  # fmt: skip
    assert sum(shares) == 731 - 100
    if given:
        assert shares[0] == int(631 * given)

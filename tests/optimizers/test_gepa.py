"""GEPA's mechanics: the per-example Pareto frontier, parents drawn from it, children
accepted on a minibatch before validation, and merges of candidates that changed
different texts. Hand-made score tables, and the ladder task (ladder_fixture.py)."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

from ladder_fixture import ladder_model, ladder_task

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend
from promptopt.optimizers.base import Candidate, Evaluated, ExampleResult, SearchState
from promptopt.optimizers.gepa import GEPA, frontier, merge_params
from promptopt.store import RunStore
from promptopt.task.data import Example
from promptopt.task.metrics import Score

VAL = tuple(Example(f"v{i}", {"text": f"item {i}"}, "positive") for i in range(4))
TRAIN = tuple(Example(f"t{i}", {"text": f"item {100 + i}"}, "positive") for i in range(6))


def scored(params: dict, rows: Sequence[float], parent: str | None = None) -> Evaluated:
    results = tuple(ExampleResult(e, "positive", Score(v)) for e, v in zip(VAL, rows, strict=True))
    return Evaluated(Candidate(params), "val", results, parent_id=parent)


def state_of(history: list[Evaluated], *, evaluate=None, trainable=("system",)) -> SearchState:
    async def no_calls(params, examples):
        raise AssertionError("no evaluation expected")

    return SearchState(seed=history[0].candidate, trainable=trainable, train=TRAIN, val=VAL,
                       program_description="", evaluate=evaluate or no_calls,
                       history=list(history))  # fmt: skip


# A table of 4 validation examples. A and B lead example 0, B and D example 1, C example 2,
# nobody gets example 3. A's and D's examples are all led by B: dropped. E leads nothing.
TABLE = {
    "A": [1, 0, 0, 0],
    "B": [1, 1, 0, 0],
    "C": [0, 0, 1, 0],
    "D": [0, 1, 0, 0],
    "E": [0, 0, 0, 0],
}


def table() -> dict[str, Evaluated]:
    return {name: scored({"system": name}, rows) for name, rows in TABLE.items()}


def test_the_frontier_keeps_the_candidates_that_lead_an_example_nobody_else_leads() -> None:
    found = table()
    ids = {e.candidate.id: name for name, e in found.items()}
    front = frontier(list(found.values()))
    assert {ids[cid]: led for cid, led in front.items()} == {"B": 2, "C": 1}


def test_parents_are_drawn_from_the_frontier_by_the_examples_they_lead() -> None:
    found = table()
    state = state_of(list(found.values()))
    gepa, rng = GEPA(), random.Random(0)
    ids = {e.candidate.id: name for name, e in found.items()}
    drawn = Counter(ids[gepa._parent(state, rng).candidate.id] for _ in range(3000))
    assert set(drawn) == {"B", "C"}
    assert 0.62 < drawn["B"] / 3000 < 0.72  # 2 examples of 3


def test_merge_takes_each_text_from_the_side_that_changed_it() -> None:
    root = scored({"system": "P", "user": "U"}, [0, 0, 0, 0])
    a = scored({"system": "P2", "user": "U"}, [1, 0, 0, 0], root.candidate.id)
    b = scored({"system": "P", "user": "U2"}, [0, 1, 0, 0], root.candidate.id)
    names = ("system", "user")
    assert merge_params(a, b, root.candidate.params, names) == {"system": "P2", "user": "U2"}
    # both changed "system": the better one's; still each changed one the other did not
    c = scored({"system": "P3", "user": "U"}, [1, 1, 0, 0], root.candidate.id)
    d = scored({"system": "P4", "user": "U4"}, [0, 0, 1, 0], root.candidate.id)
    assert merge_params(c, d, root.candidate.params, names) is None  # c changed nothing d kept
    assert merge_params(d, a, root.candidate.params, names) is None


async def test_a_due_merge_is_proposed_when_its_minibatch_is_as_good() -> None:
    root = scored({"system": "P", "user": "U"}, [0, 0, 0, 0])
    a = scored({"system": "P2", "user": "U"}, [1, 0, 1, 0], root.candidate.id)
    b = scored({"system": "P", "user": "U2"}, [0, 1, 0, 0], root.candidate.id)
    asked: list[dict] = []

    async def evaluate(params, examples, **named):
        asked.append(dict(params))
        value = 1.0 if params == {"system": "P2", "user": "U2"} else 0.0
        results = tuple(ExampleResult(e, "x", Score(value)) for e in examples)
        return Evaluated(Candidate(params), "train", results)

    state = state_of([root, a, b], evaluate=evaluate, trainable=("system", "user"))
    gepa = GEPA({"minibatch": 2})
    gepa._merges_due = 1
    tried, proposal = await gepa._merge(state, random.Random(0))
    assert tried and proposal is not None
    assert proposal.params == {"system": "P2", "user": "U2"}
    assert proposal.parent_id == a.candidate.id  # the better parent
    assert proposal.meta["kind"] == "merge" and proposal.meta["ancestor"] == root.candidate.id
    assert sorted(proposal.meta["parents"]) == sorted([a.candidate.id, b.candidate.id])
    assert asked == [a.candidate.params, proposal.params]  # the better parent, then the merge
    # the pair was tried: nothing is left to merge, and no model call is made for it
    assert await gepa._merge(state, random.Random(0)) == (False, None)
    assert gepa.stats["merges"] == 1


async def test_a_merge_worse_than_its_better_parent_on_the_minibatch_is_not_proposed() -> None:
    root = scored({"system": "P", "user": "U"}, [0, 0, 0, 0])
    a = scored({"system": "P2", "user": "U"}, [1, 0, 1, 0], root.candidate.id)
    b = scored({"system": "P", "user": "U2"}, [0, 1, 0, 0], root.candidate.id)

    async def evaluate(params, examples, **named):
        value = 0.0 if params == {"system": "P2", "user": "U2"} else 1.0
        results = tuple(ExampleResult(e, "x", Score(value)) for e in examples)
        return Evaluated(Candidate(params), "train", results)

    gepa = GEPA()
    gepa._merges_due = 1
    state = state_of([root, a, b], evaluate=evaluate, trainable=("system", "user"))
    assert await gepa._merge(state, random.Random(0)) == (True, None)
    assert gepa.stats["merges_rejected"] == 1


# -- end to end on the ladder task ----------------------------------------------------------

# the seed P answers one training item in ten right, B all, W as many as P
LEVELS = {"P": 1, "B": 10, "W": 1}
_EXAMPLE = re.compile(r"## Input \d+\ntext: item (\d+)\noutput: (\w+)\nexpected output: (\w+)")


def replies(texts: Sequence[str]):
    queue = iter(texts)

    def answer(request):
        return f"<START>{next(queue)}<END>"

    return answer


async def test_only_a_child_better_on_its_minibatch_reaches_validation(tmp_path) -> None:
    optimizer_model = FakeBackend(replies(["W", "B"]))
    task_model = FakeBackend(ladder_model(LEVELS))
    result = await aoptimize(
        ladder_task(tmp_path, optimizer="gepa", config={"iterations": 2, "minibatch": 3,
                                                         "merge": False}),
        backends={"task": task_model, "optimizer": optimizer_model},
    )  # fmt: skip
    stats = result.optimizer_stats
    assert (stats["iterations"], stats["rejected"], stats["accepted"]) == (2, 1, 1)
    assert result.best.params == {"system": "B"} and result.scores["best_val"] == 1.0
    first = optimizer_model.requests[0].messages[1].content
    assert "<TEXT>\nP\n</TEXT>" in first
    shown = _EXAMPLE.findall(first)
    assert len(shown) == 3 and all(int(item) >= 100 for item, _, _ in shown)
    assert "steps traced" not in first  # a prompt program's run has no trace to show
    with RunStore.open(result.run_dir) as store:
        ids = {c["params"]["system"]: c["id"] for c in store.candidates()}
        evaluations = Counter((e["split"], e["candidate_id"]) for e in store.evaluations())
    # W never reached validation; B did, after both were tried on a minibatch of 3
    assert {s for (split, cid) in evaluations for s in ids if ids[s] == cid and split == "val"} == {
        "P", "B"}  # fmt: skip
    assert evaluations["val", ids["B"]] == 10
    # the minibatches: P once per iteration, W and B once each, three items each
    assert (evaluations["train", ids["P"]], evaluations["train", ids["W"]],
            evaluations["train", ids["B"]]) == (6, 3, 3)  # fmt: skip


async def test_the_search_stops_before_an_iteration_the_budget_cannot_pay(tmp_path) -> None:
    # the seed's 10 validation calls, then one iteration (3 + 1 + 3 + 10 calls) fits in 30
    optimizer_model = FakeBackend(replies(["B", "B2", "B3"]))
    result = await aoptimize(
        ladder_task(tmp_path, optimizer="gepa", config={"iterations": 5}, max_calls=30),
        backends={"task": FakeBackend(ladder_model(LEVELS)), "optimizer": optimizer_model},
    )
    assert result.optimizer_stats["iterations"] == 1
    assert result.optimizer_stats["budget_stop"] == 1
    assert result.usage["calls"] <= 30


async def test_what_a_rejected_child_spent_counts_before_the_next_iteration(tmp_path) -> None:
    # seed 10 calls; W is tried and rejected (3 + 1 + 3 calls); the 13 left cannot pay for
    # another iteration that would need 17, so the search ends there instead of running over
    optimizer_model = FakeBackend(replies(["W", "B"]))
    result = await aoptimize(
        ladder_task(tmp_path, optimizer="gepa", config={"iterations": 5, "merge": False},
                    max_calls=30),
        backends={"task": FakeBackend(ladder_model(LEVELS)), "optimizer": optimizer_model},
    )  # fmt: skip
    stats = result.optimizer_stats
    assert (stats["iterations"], stats["rejected"], stats["budget_stop"]) == (1, 1, 1)
    assert result.stopped == "optimizer finished"
    assert len(optimizer_model.requests) == 1 and result.usage["calls"] == 17


async def test_a_parent_right_everywhere_is_skipped_without_an_iteration_then_the_search_ends(
    tmp_path,
) -> None:
    # the seed answers every item right: no minibatch has anything to reflect on; after
    # a pass over the 10 training items (4 minibatches of 3) the search ends, asking nothing
    optimizer_model = FakeBackend(replies([]))
    result = await aoptimize(
        ladder_task(tmp_path, optimizer="gepa", config={"iterations": 2}),
        backends={"task": FakeBackend(ladder_model({"P": 10})), "optimizer": optimizer_model},
    )
    stats = result.optimizer_stats
    assert (stats["iterations"], stats["perfect_skips"], stats["perfect_stop"]) == (0, 4, 1)
    # the seed's 10, then the 10 training items: the fourth minibatch starts a new pass, and
    # its 2 items seen before are answered from the run at no call
    assert optimizer_model.requests == [] and result.usage["calls"] == 10 + 10


_CONFUSION = re.compile(r"answered '\w+' where '\w+' was right \(\d+ of \d+ such inputs\)")


async def test_a_version_copying_the_requests_feedback_or_its_tags_is_not_a_new_text(tmp_path):
    # the first reply pastes the request's confusion count into the text: invalid, asked again;
    # the second wraps B in the <TEXT> tags the request wraps the current text in: read as B
    sent: list[str] = []

    def answer(request):
        sent.append(request.messages[-1].content)
        if len(sent) == 1:
            return f"<START>P. Note: it {_CONFUSION.search(sent[0]).group(0)}.<END>"
        return "<START><TEXT>\nB\n</TEXT><END>"

    result = await aoptimize(
        ladder_task(tmp_path, optimizer="gepa", config={"iterations": 1, "merge": False}),
        backends={"task": FakeBackend(ladder_model(LEVELS)), "optimizer": FakeBackend(answer)},
    )
    stats = result.optimizer_stats
    assert (stats["invalid"], stats["retries"], stats["accepted"]) == (1, 1, 1)
    assert "copies parts of this request" in sent[1]
    assert result.best.params == {"system": "B"}

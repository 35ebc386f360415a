"""PROMST's mechanics, driven the way the engine drives it, against hand-computed expectations:
bucketing and one summary per bucket, depth-first growth with early stops, predictor filtering,
no-op rewrites; and one end-to-end run with feedback rules declared in the task file."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from promst_fixture import is_summary as _is_summary
from promst_fixture import write_yes_no_task, yes_no_model

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend, fake_llm
from promptopt.llm.types import LLMRequest
from promptopt.optimizers.base import (
    Candidate,
    Evaluated,
    ExampleResult,
    SearchState,
)
from promptopt.optimizers.promst import PROMST
from promptopt.store import RunStore
from promptopt.task.data import Example
from promptopt.task.metrics import Score

EXAMPLES = tuple(Example(f"val-{i}", {"text": f"message {i}"}, "yes") for i in range(5))
RULES = {"format": "Answer yes or no.", "loop": "Do not repeat yourself.", "slow": "Be fast."}


def _evaluated(prompt: str, outcome: Sequence[float | str | None], *, parent: str | None = None,
               step: int = 0) -> Evaluated:  # fmt: skip
    """A candidate's validation results: per example a score (1.0 passes) or a rule name."""
    results = []
    for example, how in zip(EXAMPLES, outcome, strict=True):
        if how == 1.0:
            results.append(ExampleResult(example, "yes", Score(1.0)))
        else:
            rule = how if isinstance(how, str) else None
            results.append(ExampleResult(example, "no", Score(0.0, feedback="wrong"), rule=rule))
    return Evaluated(Candidate({"system": prompt}), "val", tuple(results), parent_id=parent,
                     origin="promst" if parent else "seed", step=step)  # fmt: skip


def _state(seed: Evaluated, *history: Evaluated) -> SearchState:
    async def never(params, examples):
        raise AssertionError("PROMST asked for an evaluation")

    return SearchState(seed=seed.candidate, trainable=("system",), train=(), val=EXAMPLES,
                       program_description="Say yes.", evaluate=never,
                       history=[seed, *history], kinds={"system": "text"}, rules=dict(RULES))  # fmt: skip


class Writer:
    """Summaries name their error type; writes return the next of ``prompts`` (or a numbered
    variant of the current prompt), so the test knows every child's text."""

    def __init__(self, prompts: Sequence[str] = ()) -> None:
        self.prompts = list(prompts)
        self.count = 0

    def __call__(self, request: LLMRequest) -> str:
        text = request.messages[-1].content
        if _is_summary(request):
            return "Summary of " + text.split("#Error type\n", 1)[1].split(":", 1)[0] + "."
        self.count += 1
        current = text.split("#Prompt\n", 1)[1].split("\n\n#Errors", 1)[0]
        new = self.prompts.pop(0) if self.prompts else f"{current} v{self.count}"
        return json.dumps({"reasoning": "r", "prompt": new})


def _engine_step(state: SearchState, optimizer: PROMST, proposals, outcomes) -> list[Evaluated]:
    """What the engine does with a step's proposals: score them, keep them, tell the optimizer."""
    results = [
        _evaluated(p.params["system"], how, parent=p.parent_id, step=state.step)
        for p, how in zip(proposals, outcomes, strict=True)
    ]
    state.history.extend(results)
    optimizer.observe(state, results)
    return results


async def test_failures_are_bucketed_by_rule_with_one_summary_call_per_bucket():
    # val-0 and val-4 broke the format rule, val-1 looped, val-2 failed otherwise, val-3 passed;
    # no failure is 'slow', so it gets no summary call
    seed = _evaluated("Say yes.", ["format", "loop", 0.0, 1.0, "format"])
    state = _state(seed)
    optimizer = PROMST({"n_children": 2, "predictor": False})
    assert {k: [r.example.id for r in v] for k, v in optimizer.buckets(state, seed).items()} == {
        "format": ["val-0", "val-4"], "loop": ["val-1"], "other": ["val-2"]}  # fmt: skip
    llm = fake_llm(Writer(["Say yes, always.", "Answer yes."]))
    proposals = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    assert [p.params["system"] for p in proposals] == ["Say yes, always.", "Answer yes."]
    assert all(p.parent_id == seed.candidate.id and p.meta["depth"] == 1 for p in proposals)
    summaries = [r for r in llm.backend.requests if _is_summary(r)]
    shown = [r.messages[-1].content for r in summaries]
    assert [s.split("#Error type\n")[1].split("\n")[0] for s in shown] == [
        "format: Answer yes or no.", "loop: Do not repeat yourself.",
        "other: Failures that match none of the declared error types."]  # fmt: skip
    assert "message 0" in shown[0] and "message 4" in shown[0] and "message 1" not in shown[0]
    writes = [r for r in llm.backend.requests if not _is_summary(r)]
    assert len(writes) == 2 and writes[0].seed != writes[1].seed
    for summary in ("Summary of format.", "Summary of loop.", "Summary of other."):
        assert summary in writes[0].messages[-1].content
    assert "1. score 0.200: Say yes." in writes[0].messages[-1].content  # the trajectory
    assert optimizer.stats["summaries"] == 3 and optimizer.stats["proposals"] == 2


async def test_growth_is_depth_first_and_a_branch_that_falls_three_times_stops():
    optimizer = PROMST({"n_children": 2, "n_selected": 2, "min_level": 2, "predictor": False})
    llm = fake_llm(Writer())
    seed = _evaluated("S", [1.0, 1.0, 1.0, 0.0, 0.0])  # 0.6
    state = _state(seed)

    async def step(outcomes):
        state.step += 1
        proposals = await optimizer.propose(state, llm=llm, rng=random.Random(0))
        parent = proposals[0].parent_id
        return parent, _engine_step(state, optimizer, proposals, outcomes)

    parent, (a, b) = await step([[1.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    assert parent == seed.candidate.id and (a.score, b.score) == (0.4, 0.2)
    # depth first: the best child of the last expansion is expanded next
    parent, (a1, a2) = await step([[1.0, 1.0, 1.0, 0.0, 0.0], [0.0] * 5])
    assert parent == a.candidate.id
    parent, (a11, a12) = await step([[1.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    assert parent == a1.candidate.id  # 0.6 beat a2's 0.0
    # a11 (0.4) and a12 (0.2) are at depth 3 > min_level 2, but their branch went
    # a 0.4 -> a1 0.6 -> child: it rose before it fell, so both grow
    assert optimizer.stats["pruned"] == 0
    parent, (x, y) = await step([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 5])
    assert parent == a11.candidate.id
    # a1 0.6 > a11 0.4 > x 0.2 (and > y 0.0): three scores falling in a row, neither grows
    assert optimizer.stats["pruned"] == 2
    assert {x.candidate.id, y.candidate.id}.isdisjoint(optimizer._stack or [])
    parent, _ = await step([[0.0] * 5, [0.0] * 5])
    assert parent == a12.candidate.id  # the next on the stack, not x


async def test_a_candidate_without_errors_ends_the_search():
    optimizer = PROMST({"n_children": 2, "predictor": False})
    seed = _evaluated("S", [1.0, 1.0, 0.0, 0.0, 0.0])
    state = _state(seed)
    llm = fake_llm(Writer())
    proposals = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    _engine_step(state, optimizer, proposals, [[1.0] * 5, [0.0] * 5])
    assert await optimizer.propose(state, llm=llm, rng=random.Random(0)) == []


async def test_the_predictor_lets_only_the_promising_rewrites_cost_evaluations():
    # six scored prompts teach it that "careful" scores and "quick" does not; then a parent
    # is expanded with 2 children + 2 surplus: the two "careful" rewrites are proposed
    scored = [("Be careful.", 0.8), ("Be quick.", 0.2), ("Read carefully.", 0.8),
              ("Quick answers.", 0.0), ("Careful reading.", 0.8), ("Quickly now.", 0.2)]  # fmt: skip
    patterns = {0.0: [0.0] * 5, 0.2: [1.0] + [0.0] * 4, 0.8: [1.0] * 4 + [0.0]}
    seed = _evaluated("Say yes.", [1.0, 0.0, 0.0, 0.0, 0.0])
    history = [_evaluated(p, patterns[s], parent=seed.candidate.id) for p, s in scored]
    state = _state(seed, *history)
    optimizer = PROMST({"n_children": 2, "surplus": 2, "predictor_min_pairs": 6})
    optimizer.observe(state, [])  # the engine's observe after a step: the predictor refits
    writes = [
        "Answer quick.",
        "Answer with care, carefully.",
        "Quick and short.",
        "Read it carefully.",
    ]
    llm = fake_llm(Writer(writes))
    proposals = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    assert [p.params["system"] for p in proposals] == [writes[1], writes[3]]  # written order
    dropped = [optimizer.predictor.predict(w) for w in (writes[0], writes[2])]
    assert min(p.meta["predicted"] for p in proposals) > max(dropped)
    assert optimizer.stats["filtered"] == 2
    # when they are scored, the predictor's error on them is measured
    _engine_step(state, optimizer, proposals, [[1.0] * 4 + [0.0], [1.0] * 5])
    expected = (abs(proposals[0].meta["predicted"] - 0.8) + abs(proposals[1].meta["predicted"] - 1.0)) / 2  # fmt: skip
    assert optimizer.stats["predictor_mae"] == pytest.approx(expected, abs=1e-3)


async def test_without_enough_pairs_or_with_the_predictor_off_nothing_is_filtered():
    seed = _evaluated("Say yes.", [1.0, 0.0, 0.0, 0.0, 0.0])
    for config in ({"predictor_min_pairs": 6}, {"predictor": False}):
        optimizer = PROMST({"n_children": 2, "surplus": 2, **config})
        state = _state(seed)
        optimizer.observe(state, [])
        llm = fake_llm(Writer())
        proposals = await optimizer.propose(state, llm=llm, rng=random.Random(0))
        assert len(proposals) == 2 and optimizer.stats["filtered"] == 0
        assert len([r for r in llm.backend.requests if not _is_summary(r)]) == 2


async def test_a_no_op_rewrite_is_counted_and_the_next_request_changes():
    seed = _evaluated("Say yes.", [1.0, 0.0, 0.0, 0.0, 0.0])
    optimizer = PROMST({"n_children": 1, "predictor": False})
    llm = fake_llm(Writer(["Say yes.", "Say yes loudly."]))
    [proposal] = await optimizer.propose(_state(seed), llm=llm, rng=random.Random(0))
    assert proposal.params["system"] == "Say yes loudly."
    first, second = [r for r in llm.backend.requests if not _is_summary(r)]
    assert "unchanged" in second.messages[-1].content and first.key() != second.key()
    assert optimizer.stats["noops"] == 1


async def test_an_expansion_with_only_no_ops_counts_and_the_same_parent_goes_again():
    seed = _evaluated("Say yes.", [1.0, 0.0, 0.0, 0.0, 0.0])
    optimizer = PROMST({"n_children": 1, "predictor": False, "retries": 1, "expansions": 3})
    # first expansion: the current prompt twice (the write and its retry); then a new one
    llm = fake_llm(Writer(["Say yes.", "Say yes.", "Say yes, loudly."]))
    [proposal] = await optimizer.propose(_state(seed), llm=llm, rng=random.Random(0))
    assert (
        proposal.params["system"] == "Say yes, loudly." and proposal.parent_id == seed.candidate.id
    )
    assert optimizer.stats["expansions"] == 2 and optimizer.stats["noops"] == 2
    writes = [r for r in llm.backend.requests if not _is_summary(r)]
    assert len(writes) == 3 and len({r.key() for r in writes}) == 3
    # with every expansion spent on no-ops the search ends, asking no more
    spent = PROMST({"n_children": 1, "predictor": False, "retries": 0, "expansions": 2})
    llm = fake_llm(Writer(["Say yes.", "Say yes.", "Never sent."]))
    assert await spent.propose(_state(seed), llm=llm, rng=random.Random(0)) == []
    assert spent.stats["expansions"] == 2 and len(
        [r for r in llm.backend.requests if not _is_summary(r)]) == 2  # fmt: skip


async def test_the_children_are_written_at_once_and_a_twin_is_a_noop():
    # the writes of one expansion do not depend on each other: all go out before any answer
    seed = _evaluated("Say yes.", [1.0, 0.0, 0.0, 0.0, 0.0])
    optimizer = PROMST({"n_children": 3, "predictor": False, "retries": 1})
    in_flight, most = 0, 0
    writer = Writer(["Say yes, always.", "Say yes, always.", "Answer yes."])

    async def answer(request: LLMRequest) -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return writer(request)

    llm = fake_llm(answer)
    proposals = await optimizer.propose(_state(seed), llm=llm, rng=random.Random(0))
    assert most == 3  # the three writes (one summary before them)
    assert [p.params["system"] for p in proposals] == ["Say yes, always.", "Answer yes."]
    writes = [r for r in llm.backend.requests if not _is_summary(r)]
    # seeds drawn before the writes start, a block of 1 + retries each: a replay sends the same
    assert [r.seed for r in writes] == [0, 2, 4]
    assert optimizer.stats["noops"] == 1


# -- end to end, rules declared in the task file -----------------------------------------------


async def test_rules_from_the_task_file_tag_failures_and_shape_the_summaries(tmp_path):
    path = write_yes_no_task(tmp_path, {"n_children": 2, "expansions": 3, "predictor": False})
    optimizer = FakeBackend(Writer(["Decide. Answer with one word.", "Decide quickly."]))
    result = await aoptimize(
        path, backends={"task": FakeBackend(yes_no_model), "optimizer": optimizer}
    )
    # the seed shouts YEP for every yes and chats every no: both rules, no 'other' bucket
    summaries = [r for r in optimizer.requests if _is_summary(r)]
    assert [r.messages[-1].content.split("\n")[1].split(":")[0] for r in summaries] == [
        "chatty", "shouting"]  # fmt: skip
    assert result.scores["best_val"] == 1.0 and result.stopped == "optimizer finished"
    assert result.best.params["system"] == "Decide. Answer with one word."
    with RunStore.open(result.run_dir) as store:
        feedback = {e["feedback"] for e in store.evaluations(split="val") if e["score"] < 1}
    assert (
        "expected 'no', got 'I would say no'; chatty: Answer with one word: yes or no." in feedback
    )
    assert result.optimizer_stats["noops"] == 0 and result.optimizer_stats["summaries"] == 2


async def test_with_choices_the_write_request_names_the_answers_then_the_mistakes():
    # the examples answer "no" where "yes" is right; without the allowed answers, Qwen's
    # prompts offered labels the program never answers ("'positive', 'negative', 'neutral'")
    seed = _evaluated("Say yes.", [1.0, 0.0, 0.0, 0.0, 0.0])
    state = replace(_state(seed), choices=("yes", "no"))
    llm = fake_llm(Writer())
    await PROMST({"n_children": 1, "predictor": False}).propose(
        state, llm=llm, rng=random.Random(0)
    )
    [write] = [r for r in llm.backend.requests if not _is_summary(r)]
    assert (
        "The program's answer must be one of: yes, no. On 5 scored inputs the prompt got 4 "
        "wrong; most often it answered 'no' where 'yes' was right (4 of 5 such inputs). Say in "
        "the new prompt how to tell these answers apart.\n\n#Trajectory"
    ) in write.messages[-1].content
    # without choices, neither line
    llm = fake_llm(Writer())
    await PROMST({"n_children": 1, "predictor": False}).propose(
        _state(seed), llm=llm, rng=random.Random(0)
    )
    [write] = [r for r in llm.backend.requests if not _is_summary(r)]
    assert "must be one of" not in write.messages[-1].content
    assert "scored inputs" not in write.messages[-1].content


async def test_the_write_schema_asks_for_the_reasoning_before_the_prompt():
    # a grammar-constrained backend writes keys in the schema's order: sorted, the prompt came
    # first and the reasoning after it, so nothing reasoned before the prompt was written
    seed = _evaluated("Say yes.", [1.0, 0.0, 0.0, 0.0, 0.0])
    llm = fake_llm(Writer())
    await PROMST({"n_children": 1, "predictor": False}).propose(
        _state(seed), llm=llm, rng=random.Random(0)
    )
    [write] = [r for r in llm.backend.requests if not _is_summary(r)]
    assert list(json.loads(write.json_schema)["properties"]) == ["reasoning", "prompt"]

"""SPO's mechanics with scripted models: judge bookkeeping, ties, no labels, no-op replies."""

from __future__ import annotations

import json
import random
import textwrap

import pytest
from spo_fixture import (
    EDITS,
    SEED_PROMPT,
    answer_sets,
    judge_model,
    optimizer_model,
    qa_task,
    task_model,
)

from promptopt.api import aoptimize
from promptopt.errors import TaskFileError
from promptopt.llm.fakes import FakeBackend, fake_llm
from promptopt.optimizers.base import (
    Candidate,
    Evaluated,
    ExampleResult,
    SearchState,
    Verdict,
    Vote,
)
from promptopt.optimizers.spo import SPO, read_choice
from promptopt.store import RunStore
from promptopt.task.data import Example
from promptopt.task.imports import import_ref
from promptopt.task.loader import load_task
from promptopt.task.metrics import Score

__all__ = ["qa_task"]  # the fixture, used by name

EXAMPLES = tuple(Example(f"val-{i}", {"question": f"question {i}?"}) for i in range(3))


def _evaluated(prompt: str, answers: list[str]) -> Evaluated:
    results = tuple(ExampleResult(e, a, Score(0.0)) for e, a in zip(EXAMPLES, answers, strict=True))
    return Evaluated(Candidate({"system": prompt}), "val", results)


def _state(seed: Evaluated) -> SearchState:
    async def never(params, examples):  # SPO never probes
        raise AssertionError("SPO asked for an evaluation")

    return SearchState(seed=seed.candidate, trainable=("system",), train=(), val=EXAMPLES,
                       program_description="Answer trivia questions.", evaluate=never,
                       history=[seed], kinds={"system": "text"}, incumbent=seed)  # fmt: skip


INCUMBENT = _evaluated("Answer the question, old prompt.", ["old one", "old two", "old three"])
CHALLENGER = _evaluated("Answer the question, new prompt.", ["new one", "new two", "new three"])


@pytest.mark.parametrize(
    ("reply", "choice"),
    [("A", "A"), (" b.\n", "B"), ("**B**", "B"), ("Answer A is better.", "A"),
     ("<choose>B</choose>", "B"), ("A, because it is shorter", "A"), ("Both are fine", ""),
     ("set A or set B", ""), ("", "")],
)  # fmt: skip
def test_read_choice(reply, choice):
    assert read_choice(reply) == choice


def test_a_vote_counts_for_the_side_the_challenger_was_shown_on():
    # not swapped: incumbent = A, challenger = B; swapped: challenger = A
    assert Vote(0, swapped=False, choice="B").challenger_won
    assert not Vote(0, swapped=False, choice="A").challenger_won
    assert Vote(0, swapped=True, choice="A").challenger_won
    assert not Vote(0, swapped=True, choice="B").challenger_won
    assert not Vote(0, swapped=True, choice="").challenger_won  # unreadable: the incumbent's


@pytest.mark.parametrize(
    ("wins", "accepted", "share"),
    [(0, False, 0.0), (2, False, 0.5), (3, True, 0.75), (4, True, 1.0)],
)
def test_the_challenger_needs_a_strict_majority(wins, accepted, share):
    votes = tuple(Vote(i, swapped=False, choice="B" if i < wins else "A") for i in range(4))
    verdict = Verdict("old", "new", votes)
    assert (verdict.wins, verdict.accepted, verdict.share) == (wins, accepted, share)


async def test_judge_shows_the_challenger_on_the_side_drawn_for_each_vote():
    # random.Random(0) draws 0.844, 0.758, 0.421, 0.259: swapped (< 0.5) for votes 2 and 3;
    # the judge picks whichever side holds the answers starting with "new"
    def picks_new(request):
        a, _ = answer_sets(request)
        return "A" if all(x.startswith("new") for x in a) else "B"

    spo = SPO()
    judge = fake_llm(picks_new)
    verdict = await spo.judge(_state(INCUMBENT), incumbent=INCUMBENT, challenger=CHALLENGER,
                              llm=judge, rng=random.Random(0))  # fmt: skip
    assert [v.swapped for v in verdict.votes] == [False, False, True, True]
    assert [v.choice for v in verdict.votes] == ["B", "B", "A", "A"]
    assert [v.challenger_won for v in verdict.votes] == [True] * 4
    assert verdict.accepted and verdict.share == 1.0
    shown = [answer_sets(r) for r in judge.backend.requests]
    assert shown[0] == (["old one", "old two", "old three"], ["new one", "new two", "new three"])
    assert shown[2] == (["new one", "new two", "new three"], ["old one", "old two", "old three"])
    assert [r.seed for r in judge.backend.requests] == [0, 1, 2, 3]  # four distinct requests
    assert {r.choices for r in judge.backend.requests} == {("A", "B")}


async def test_a_two_two_split_keeps_the_incumbent():
    # a judge that always says A wins the challenger exactly the swapped votes: 2 of 4
    verdict = await SPO().judge(_state(INCUMBENT), incumbent=INCUMBENT, challenger=CHALLENGER,
                                llm=fake_llm(lambda r: "A"), rng=random.Random(0))  # fmt: skip
    assert [v.challenger_won for v in verdict.votes] == [False, False, True, True]
    assert verdict.wins == 2 and not verdict.accepted
    # random.Random(7) swaps votes 0, 1 and 3: a 3-1 win
    verdict = await SPO().judge(_state(INCUMBENT), incumbent=INCUMBENT, challenger=CHALLENGER,
                                llm=fake_llm(lambda r: "A"), rng=random.Random(7))  # fmt: skip
    assert verdict.wins == 3 and verdict.accepted


async def test_the_judge_sees_answers_only_never_prompts_or_rounds():
    judge = fake_llm(lambda r: "A")
    spo = SPO({"requirements": "Short, correct answers."})
    await spo.judge(_state(INCUMBENT), incumbent=INCUMBENT, challenger=CHALLENGER, llm=judge,
                    rng=random.Random(0))  # fmt: skip
    for request in judge.backend.requests:
        text = "\n".join(m.content for m in request.messages)
        assert "Short, correct answers." in text and "question 2?" in text
        for hidden in ("old prompt", "new prompt", "round", "incumbent", "challenger", "seed"):
            assert hidden not in text.lower()


async def test_a_no_op_rewrite_changes_the_next_request_and_is_counted():
    same = json.dumps({"analysis": "", "modification": "", "prompt": INCUMBENT.candidate.params["system"]})  # fmt: skip
    new = json.dumps({"analysis": "x", "modification": "shorter", "prompt": "Answer briefly."})
    replies = iter([same, new])
    llm = fake_llm(lambda request: next(replies))
    spo = SPO()
    [proposal] = await spo.propose(_state(INCUMBENT), llm=llm, rng=random.Random(0))
    assert proposal.params == {"system": "Answer briefly."}
    assert proposal.meta["modification"] == "shorter"
    first, second = llm.backend.requests
    assert first.key() != second.key() and first.seed != second.seed
    assert "unchanged" in second.messages[-1].content
    assert spo.stats["noops"] == 1 and spo.stats["calls"] == 2


async def test_a_rewrite_already_tried_is_a_no_op_too():
    tried = _evaluated("Answer briefly.", ["a", "b", "c"])
    state = _state(INCUMBENT)
    state.history.append(tried)
    replies = iter([json.dumps({"prompt": "Answer briefly."}), json.dumps({"prompt": "Say it."})])
    llm = fake_llm(lambda request: next(replies))
    [proposal] = await SPO().propose(state, llm=llm, rng=random.Random(0))
    assert proposal.params == {"system": "Say it."}
    assert "already tried" in llm.backend.requests[1].messages[-1].content


LISTED = _evaluated("Reply with one word: human, entity or number.", ["human", "entity", "number"])


@pytest.mark.parametrize("keep", [True, False])
async def test_a_rewrite_that_drops_an_answer_is_refused_unless_allowed(keep):
    dropped = json.dumps({"prompt": "Reply with one word: human or entity."})
    kept = json.dumps({"prompt": "Say human, entity or number, one word."})
    replies = iter([dropped, kept])
    llm = fake_llm(lambda request: next(replies))
    state = _state(LISTED)
    state.choices = ("human", "entity", "number", "location")
    spo = SPO({"keep_choices": keep})
    [proposal] = await spo.propose(state, llm=llm, rng=random.Random(0))
    if keep:  # asked again, told which answer the rewrite lost
        assert proposal.params == {"system": "Say human, entity or number, one word."}
        assert "no longer names 'number'" in llm.backend.requests[1].messages[-1].content
        assert spo.stats["dropped_choices"] == 1 and spo.stats["calls"] == 2
    else:
        assert proposal.params == {"system": "Reply with one word: human or entity."}
        assert spo.stats["dropped_choices"] == 0 and spo.stats["calls"] == 1


async def test_meta_prompts_show_shapes_not_sample_answers():
    llm = fake_llm(lambda request: json.dumps({"prompt": "Answer briefly."}))
    await SPO().propose(_state(INCUMBENT), llm=llm, rng=random.Random(0))
    system = llm.backend.requests[0].messages[0].content
    assert '"prompt": the complete new prompt' in system
    assert "{" not in system.replace("{like_this}", "")  # no JSON sample a model could copy


# -- end to end -----------------------------------------------------------------------------


async def test_a_task_without_labels_or_metric_loads_and_runs(qa_task):
    path = qa_task()
    spec = load_task(path)
    assert spec.data.target is None and spec.metric is None
    judge = FakeBackend(judge_model)
    result = await aoptimize(path, backends={"task": FakeBackend(task_model),
                                             "optimizer": FakeBackend(optimizer_model),
                                             "judge": judge})  # fmt: skip
    # round 1 adds "Be kind.": the same long answers, a tie the judge gives to A, and the
    #   first four draws of random.Random(0) swap votes 2 and 3 only: 2-2, rejected;
    # round 2 adds "Be brief.": shorter answers win all four votes: the new incumbent;
    # round 3 adds "Name your source." to it: a tie again; draws 9-12 swap vote 0 only: 1-3
    assert result.best.params["system"] == SEED_PROMPT + EDITS[1]
    assert result.scores == {"seed_val": 0.5, "best_val": 1.0, "seed_test": None,
                             "best_test": None}  # fmt: skip
    assert result.optimizer_stats["accepted"] == 1
    assert result.optimizer_stats["votes"] == 12 == len(judge.requests)
    assert result.judge_usage["calls"] == 12  # the judge's share, apart from the optimizer's
    assert result.optimizer_usage["calls"] == result.optimizer_stats["calls"]
    with RunStore.open(result.run_dir) as store:
        votes = store.votes()
        assert [v["challenger_won"] for v in votes] == [
            False, False, True, True, True, True, True, True, True, False, False, False]  # fmt: skip
        assert [v["swapped"] for v in votes[:4]] == [False, False, True, True]
        assert all(v["challenger_won"] == (v["choice"] == ("A" if v["swapped"] else "B"))
                   for v in votes)  # fmt: skip
        scores = {c["candidate_id"]: c["score"] for c in store.evaluations(split="val")}
        assert sorted(scores.values()) == [0.25, 0.5, 0.5, 1.0]


METRIC = """
seen = []

def score(prediction, example):
    seen.append(example.id)
    return 1.0 if example.target.lower() in prediction.lower() else 0.0
"""


async def test_labels_score_only_the_test_split(qa_task):
    path = qa_task(labels=True, metric='{kind: python, function: "spo_labels:score"}')
    (path.parent / "spo_labels.py").write_text(textwrap.dedent(METRIC))
    result = await aoptimize(path, backends={"task": FakeBackend(task_model),
                                             "optimizer": FakeBackend(optimizer_model),
                                             "judge": FakeBackend(judge_model)})  # fmt: skip
    seen = import_ref("spo_labels:seen", base_dir=path.parent)  # the module the run loaded
    assert seen and all(example_id.startswith("test-") for example_id in seen)
    assert result.scores["seed_val"] == 0.5 and result.scores["best_test"] is not None


def test_a_task_without_metric_needs_a_pairwise_optimizer(qa_task):
    path = qa_task(config={"k": 1})
    path.write_text(path.read_text().replace("name: spo", "name: exemplars"))
    with pytest.raises(TaskFileError, match=r"metric: required by optimizer 'exemplars'"):
        load_task(path)


async def test_without_a_metric_nothing_is_planned_or_evaluated_on_test(qa_task):
    from promptopt.api import plan
    from promptopt.errors import ConfigError
    from promptopt.evaluate import evaluate

    path = qa_task()
    assert plan(path).test_calls == 0
    with pytest.raises(ConfigError, match="no metric"):
        await evaluate(path)
    assert not (path.parent / "traces").exists()  # refused before a run folder was made

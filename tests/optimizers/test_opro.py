"""OPRO end to end on the ladder task (ladder_fixture.py): what each request shows, and
how it treats replies that bring nothing new."""

from __future__ import annotations

import json
import re

import pytest
from ladder_fixture import ladder_model, ladder_task

from promptopt.api import aoptimize
from promptopt.export import ExportOptions, export_preferences
from promptopt.llm.fakes import FakeBackend
from promptopt.store import RunStore

LEVELS = {"P": 5, "Q1": 7, "Q2": 3, "Q3": 6}
_ENTRY = re.compile(r"<TEXT>\n(.*?)\n</TEXT>\nscore: (\d+)")


def numbered(names):
    """An optimizer model answering its n-th request with ``names[n]`` (then ``P``)."""
    replies = iter(names)

    def answer(request):
        return f"<START>{next(replies, 'P')}<END>"

    return answer


def history_of(request):
    return [(text, int(score)) for text, score in _ENTRY.findall(request.messages[1].content)]


async def run_opro(tmp_path, config, handler, *, max_calls=1000):
    optimizer_model = FakeBackend(handler)
    result = await aoptimize(
        ladder_task(tmp_path, optimizer="opro", config=config, max_calls=max_calls),
        backends={"task": FakeBackend(ladder_model(LEVELS)), "optimizer": optimizer_model},
    )
    return result, optimizer_model.requests


async def test_each_step_shows_the_best_scored_versions_lowest_first(tmp_path):
    config = {"steps": 3, "per_step": 1, "history": 2, "exemplars": 2}
    result, requests = await run_opro(tmp_path, config, numbered(["Q1", "Q2", "Q3"]))
    assert [history_of(r) for r in requests] == [
        [("P", 50)],
        [("P", 50), ("Q1", 70)],
        [("P", 50), ("Q1", 70)],  # Q2 (30) is not among the best 2
    ]
    shown = re.findall(r"text: (item \d+)\nexpected output: (\w+)", requests[0].messages[1].content)
    assert len(shown) == 2 and all(int(item.split()[1]) >= 100 for item, _ in shown)
    assert "one of: positive, negative" in requests[0].messages[1].content
    assert result.best.params == {"system": "Q1"}
    assert result.scores["best_val"] == 0.7
    assert result.optimizer_stats["steps"] == 3 and result.optimizer_stats["proposals"] == 3
    with RunStore.open(result.run_dir) as store:
        proposed = [c for c in store.candidates() if c["origin"] == "opro"]
    assert [c["params"]["system"] for c in proposed] == ["Q1", "Q2", "Q3"]
    assert {c["parent_id"] for c in proposed[1:]} == {proposed[0]["id"]}  # built on the best


async def test_requests_of_one_step_go_out_together_with_their_own_seeds(tmp_path):
    config = {"steps": 1, "per_step": 3, "retries": 0}
    result, requests = await run_opro(tmp_path, config, lambda request: "<START>Q1<END>")
    assert len(requests) == 3
    assert len({r.messages for r in requests}) == 1
    assert len({r.seed for r in requests}) == 3
    # all three wrote Q1: one proposal, two no-ops
    assert result.optimizer_stats["proposals"] == 1
    assert result.optimizer_stats["noops"] == 2


async def test_a_noop_reply_changes_the_next_request_and_a_barren_step_does_not_end_the_run(
    tmp_path,
):
    # step 1: the current text, then (asked again, changed) the current text again; step 2: Q1
    config = {"steps": 2, "per_step": 1, "retries": 1}
    result, requests = await run_opro(tmp_path, config, numbered(["P", "P", "Q1"]))
    first, retry, second = requests
    assert retry.messages[:2] == first.messages and retry.seed != first.seed
    assert retry.temperature >= 0.7
    assert "tried already" in retry.messages[-1].content
    assert len(second.messages) == 2 and second.seed not in (first.seed, retry.seed)
    assert result.optimizer_stats["noops"] == 2
    assert result.optimizer_stats["steps"] == 2
    assert result.best.params == {"system": "Q1"}
    assert result.stopped == "optimizer finished"


async def test_the_steps_end_before_one_the_budget_cannot_score(tmp_path):
    # 10 seed calls + 25: room for the first step of 2 (2 x 11), not the second
    config = {"steps": 5, "per_step": 2, "retries": 0}
    result, requests = await run_opro(tmp_path, config, numbered(["Q1", "Q3"]), max_calls=35)
    assert len(requests) == 2
    assert result.optimizer_stats["budget_stop"] == 1
    assert result.stopped == "optimizer finished"
    assert result.best.params == {"system": "Q1"}


async def test_two_replies_to_one_request_become_an_optimizer_level_preference_pair(tmp_path):
    """The engine links each proposal to the reply it was read from, so the export's
    optimizer level pairs the two replies of one step (same meta-prompt, two seeds)."""
    result, requests = await run_opro(tmp_path, {"steps": 1, "per_step": 2},
                                      numbered(["Q1", "Q2"]))  # fmt: skip
    assert requests[0].messages == requests[1].messages and requests[0].seed != requests[1].seed
    out = tmp_path / "pairs.jsonl"
    export_preferences(
        [str(result.run_dir)], out, options=ExportOptions(level="optimizer", margin=0.3)
    )
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["content"] for m in row["prompt"]] == [m.content for m in requests[0].messages]
    assert row["chosen"][0]["content"] == "<START>Q1<END>"  # 0.7 on validation
    assert row["rejected"][0]["content"] == "<START>Q2<END>"  # 0.3
    assert row["metadata"]["margin"] == pytest.approx(0.4)


async def test_a_version_quoting_an_input_shown_is_invalid_and_asked_again(tmp_path, monkeypatch):
    # the ladder's inputs ("item 104") are two words: count a two-word input as a copy here
    monkeypatch.setattr("promptopt.optimizers.copies._INPUT_MIN_WORDS", 2)

    def answer(request):
        if len(request.messages) > 2:  # asked again
            return "<START>Q1<END>"
        item = re.search(r"text: (item \d+)", request.messages[1].content).group(1)
        return f"<START>A text like {item.upper()}.<END>"

    config = {"steps": 1, "per_step": 1, "retries": 1, "exemplars": 2}
    result, requests = await run_opro(tmp_path, config, answer)
    assert len(requests) == 2
    assert requests[1].messages[-1].content.startswith("That version copies parts of this request")
    assert result.optimizer_stats["invalid"] == 1
    assert result.best.params == {"system": "Q1"}


async def test_a_version_echoing_the_request_is_invalid_but_one_building_on_a_shown_version_is_not(
    tmp_path,
):
    echo = "<START>Q1\nSome inputs of the task, each with the output the program should give:<END>"
    built = "<START>Q1\nLonger version of Q1 with more words.<END>"
    replies = iter([echo, "<START>Longer version of Q1 with more words.<END>", built])
    config = {"steps": 2, "per_step": 1, "retries": 1}
    result, requests = await run_opro(tmp_path, config, lambda request: next(replies))
    assert len(requests) == 3
    assert requests[1].messages[-1].content.startswith("That version copies parts of this request")
    # step 2 shows step 1's version in its history: a child may keep its lines
    assert "Longer version of Q1 with more words." in requests[2].messages[1].content
    assert result.optimizer_stats["invalid"] == 1 and result.optimizer_stats["proposals"] == 2

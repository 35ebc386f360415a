"""Preference export on hand-built run stores: every expected pair worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stores import (
    BAD,
    GOOD,
    META_1,
    TOPIC,
    call,
    evaluate,
    optimizer_run,
    reviews_runs,
    triage_runs,
)

from promptopt.errors import ConfigError
from promptopt.export import ExportOptions, export_preferences
from promptopt.store import RunStore


def chat(*messages: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in messages]


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def summary(row: dict[str, Any]) -> tuple[Any, ...]:
    """(prompt, chosen text, rejected text, chosen run/candidate, rejected run/candidate,
    same_prompt, margin)."""
    meta = row["metadata"]
    return (
        row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"],
        f"{meta['chosen']['run']}/{meta['chosen']['candidate']}",
        f"{meta['rejected']['run']}/{meta['rejected']['candidate']}",
        meta["same_prompt"], meta["margin"],
    )  # fmt: skip


def export(tmp_path: Path, names: list[str], name: str = "pairs.jsonl", **options: Any) -> Path:
    out = tmp_path / "out" / name
    export_preferences(names, out, options=ExportOptions(**options), output_dir=tmp_path / "runs")
    return out


@pytest.fixture
def reviews(tmp_path: Path) -> list[str]:
    return reviews_runs(tmp_path / "runs")


# -- output level --------------------------------------------------------------------------


def test_output_pairs_of_two_runs_by_hand(tmp_path: Path, reviews: list[str]) -> None:
    out = export(tmp_path, [str(tmp_path / "runs")])  # a runs folder: every run in it
    s1_bad, s2_bad = (
        chat(("system", "S1"), ("user", "bad")),
        chat(("system", "S2"), ("user", "bad")),
    )
    s2_good, s9_good = (chat(("system", s), ("user", "good")) for s in ("S2", "S9"))
    assert [summary(r) for r in rows(out)] == [
        # input "bad": c2 was right; c1 was sent S1, c3 (calibrated c2) c2's very messages
        (s1_bad, "negative", "positive", "r1/c2", "r1/c1", False, 1.0),
        (s2_bad, "negative", "positive", "r1/c2", "r1/c3", True, 1.0),
        # input "good": the calibrated c3 beats c2 on c2's messages; r2's copy of c2 adds
        # nothing (the same request and answer); c1 beats r2's c9 across runs
        (s2_good, "positive", "negative", "r1/c3", "r1/c2", True, 1.0),
        (s9_good, "positive", "negative", "r1/c1", "r2/c9", False, 1.0),
    ]
    first = rows(out)[0]["metadata"]
    assert first["level"] == "output" and first["task"] == "reviews"
    assert json.loads(first["input"]) == BAD
    assert first["chosen"] == {"run": "r1", "candidate": "c2", "parent": "", "split": "val",
                               "example": "bad", "trace": "", "model": "fake:small",
                               "score": 1.0}  # fmt: skip


def test_cap_keeps_the_largest_margins_and_same_prompt_keeps_one_prompt_pairs(
    tmp_path: Path, reviews: list[str]
) -> None:
    capped = [summary(r)[3:5] for r in rows(export(tmp_path, reviews, max_per_input=1))]
    assert capped == [("r1/c2", "r1/c1"), ("r1/c3", "r1/c2")]
    same = [summary(r)[3:6] for r in rows(export(tmp_path, reviews, same_prompt=True))]
    assert same == [("r1/c2", "r1/c3", True), ("r1/c3", "r1/c2", True)]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"margin": 1.5}, 0),  # no two outputs differ by that much
        ({"min_score": 2.0}, 0),
        ({"tasks": ("triage",)}, "no run is left"),
        ({"runs": ("r2",)}, 0),  # r2 alone holds only failures: nothing to prefer
        ({"runs": ("r*",)}, 4),
        ({"models": ("fake:other",)}, 0),
        ({"models": ("small",)}, 4),  # the model name alone matches too
        ({"level": "node"}, 0),
    ],
)
def test_filters(tmp_path: Path, reviews: list[str], options: dict, expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            export(tmp_path, reviews, **options)
        return
    assert len(rows(export(tmp_path, reviews, **options))) == expected


def test_same_runs_give_byte_identical_files_in_any_order(
    tmp_path: Path, reviews: list[str]
) -> None:
    optimizer_run(tmp_path / "runs")
    triage_runs(tmp_path / "runs")
    runs = ["r1", "r2", "r3", "r4", "r5"]
    first = export(tmp_path, runs, "a.jsonl").read_bytes()
    again = export(tmp_path, list(reversed(runs)), "b.jsonl").read_bytes()
    assert first == again and len(first.splitlines()) == 4 + 2 + 1


def test_curriculum_orders_every_pair_by_margin(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "runs", task={"name": "graded"}, run_id="g") as store:
        for candidate, scores in (("a", (0.4, 0.0)), ("b", (1.0, 1.0))):
            store.add_candidate(candidate, {}, parent_id=None, step=0, origin="seed")
            for text, score in zip(("x1", "x2"), scores, strict=True):
                messages = (("system", candidate), ("user", text))
                evaluate(store, candidate, {"text": text}, f"{candidate}!", score,
                         call(store, messages, f"{candidate}!"))  # fmt: skip
    by_input = [r["metadata"]["margin"] for r in rows(export(tmp_path, ["g"], margin=0.1))]
    assert by_input == [pytest.approx(0.6), 1.0]  # x1 before x2
    ordered = export(tmp_path, ["g"], "c.jsonl", margin=0.1, order="curriculum")
    assert [r["metadata"]["margin"] for r in rows(ordered)] == [1.0, pytest.approx(0.6)]
    with pytest.raises(ConfigError, match="curriculum"):
        export(tmp_path, ["g"], format="kto", order="curriculum")


def test_split_by_input_is_disjoint_deterministic_and_roughly_the_fraction(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "runs", task={"name": "many"}, run_id="m") as store:
        for candidate in ("good", "bad"):
            store.add_candidate(candidate, {}, parent_id=None, step=0, origin="seed")
        for n in range(60):
            for candidate, score in (("good", 1.0), ("bad", 0.0)):
                inputs = {"text": f"input {n}"}
                key = call(store, (("system", candidate), ("user", inputs["text"])), candidate)
                evaluate(store, candidate, inputs, candidate, score, key, example=str(n))
    report = export_preferences(["m"], tmp_path / "s.jsonl", output_dir=tmp_path / "runs",
                                options=ExportOptions(test_fraction=0.25, split_seed=7))  # fmt: skip
    train, test = rows(tmp_path / "s.jsonl"), rows(tmp_path / "s.test.jsonl")
    assert report.rows == {"train": len(train), "test": len(test)} and len(train) + len(test) == 60
    inputs = [{r["metadata"]["input"] for r in side} for side in (train, test)]
    assert not inputs[0] & inputs[1]
    assert 5 <= len(test) <= 25  # about a quarter of 60 inputs
    other = export_preferences(["m"], tmp_path / "o.jsonl", output_dir=tmp_path / "runs",
                               options=ExportOptions(test_fraction=0.25, split_seed=8))  # fmt: skip
    assert other.rows != report.rows or rows(tmp_path / "o.test.jsonl") != test
    export_preferences(["m"], tmp_path / "s2.jsonl", output_dir=tmp_path / "runs",
                       options=ExportOptions(test_fraction=0.25, split_seed=7))  # fmt: skip
    assert (tmp_path / "s2.test.jsonl").read_bytes() == (tmp_path / "s.test.jsonl").read_bytes()


# -- node level ------------------------------------------------------------------------------


def test_node_pairs_credit_the_first_llm_call_that_answered_otherwise(tmp_path: Path) -> None:
    keys = triage_runs(tmp_path / "runs")
    found = rows(export(tmp_path, ["r3", "r4"]))
    assert [(r["metadata"]["node"], *summary(r)[1:]) for r in found] == [
        # t1 vs t2: the topic was the same request; classify answered otherwise
        ("classify", "billing", "technical", "r3/d1", "r3/d2", False, 1.0),
        # t1 vs t3: only the code differed, no pair; t1 vs t4: the sampled topic differed
        ("topic", "payment", "bug", "r3/d1", "r4/d4", True, 1.0),
    ]
    assert found[0]["prompt"] == chat(("system", "I2"), ("user", "refund please"))
    assert found[1]["prompt"] == chat(*TOPIC)
    assert [r["metadata"]["rejected"]["trace"] for r in found] == ["t2", "t4"]
    assert keys["topic"] != keys["topic4"]  # other temperature, same messages
    only_topic = rows(export(tmp_path, ["r3", "r4"], "t.jsonl", nodes=("topic",)))
    assert [r["metadata"]["node"] for r in only_topic] == ["topic"]


# -- optimizer level -------------------------------------------------------------------------


def test_optimizer_pair_is_the_best_and_worst_reply_to_one_meta_prompt(tmp_path: Path) -> None:
    optimizer_run(tmp_path / "runs")
    (row,) = rows(export(tmp_path, ["r5"], level="optimizer"))
    assert row["prompt"] == chat(*META_1)
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == (
        '{"suggestion": {"p": "one"}}', '{"suggestion": {"p": "two"}}',
    )  # fmt: skip
    meta = row["metadata"]
    assert (meta["chosen"]["score"], meta["rejected"]["score"], meta["margin"]) == (0.75, 0.25, 0.5)
    assert meta["chosen"]["parent"] == "e0" and meta["same_prompt"] is True


# -- formats -------------------------------------------------------------------------------


def test_kto_rows_are_each_side_with_the_messages_it_was_sent(
    tmp_path: Path, reviews: list[str]
) -> None:
    found = rows(export(tmp_path, ["r1"], format="kto"))
    assert [(r["prompt"][0]["content"], r["prompt"][1]["content"], r["completion"][0]["content"],
             r["label"]) for r in found] == [
        ("S2", "bad", "negative", True), ("S1", "bad", "positive", False),
        ("S2", "bad", "positive", False),
        ("S2", "good", "positive", True), ("S2", "good", "negative", False),
    ]  # fmt: skip


def test_listwise_ranks_every_distinct_response_of_an_input(
    tmp_path: Path, reviews: list[str]
) -> None:
    bad, good = rows(export(tmp_path, ["r1"], format="listwise"))
    ranked = [(r["metadata"]["candidate"], r["score"], r["rank"]) for r in bad["responses"]]
    assert ranked == [("c2", 1.0, 1), ("c1", 0.0, 2), ("c3", 0.0, 3)]
    assert [r["metadata"]["candidate"] for r in good["responses"]] == ["c1", "c3", "c2"]
    assert json.loads(good["metadata"]["input"]) == GOOD


def test_every_format_loads_with_datasets(tmp_path: Path, reviews: list[str]) -> None:
    import datasets

    optimizer_run(tmp_path / "runs")
    triage_runs(tmp_path / "runs")
    runs = ["r1", "r2", "r3", "r4", "r5"]
    for fmt, columns in (("trl", {"prompt", "chosen", "rejected", "metadata"}),
                         ("kto", {"prompt", "completion", "label", "metadata"}),
                         ("listwise", {"responses", "metadata"})):  # fmt: skip
        path = export(tmp_path, runs, f"{fmt}.jsonl", format=fmt)
        loaded = datasets.load_dataset("json", data_files=str(path), split="train",
                                       cache_dir=str(tmp_path / "hf"))  # fmt: skip
        assert set(loaded.column_names) == columns and len(loaded) == len(rows(path)) > 0

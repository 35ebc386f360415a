"""Judge-level pairs (SPO's pairwise votes): a hand-built store worked out by hand, and a
scripted SPO run whose winning rewrite is exported with the judge's confidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from spo_fixture import (
    EDITS,
    SEED_PROMPT,
    judge_model,
    optimizer_model,
    task_model,
    write_qa_task,
)
from stores import judged_run

from promptopt.api import aoptimize
from promptopt.cli import main
from promptopt.export import ExportOptions, export_preferences
from promptopt.export.mining import Item, Judgment
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest, Message
from promptopt.report.html import write_report


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def export(tmp_path: Path, runs: list[str], name: str = "pairs.jsonl", **options: Any) -> Path:
    out = tmp_path / "out" / name
    export_preferences(runs, out, options=ExportOptions(**options), output_dir=tmp_path / "runs")
    return out


def summary(row: dict[str, Any]) -> tuple[Any, ...]:
    """(system and user of the prompt, chosen, rejected, chosen/rejected candidate,
    confidence, margin)."""
    meta = row["metadata"]
    return (
        tuple(m["content"] for m in row["prompt"]),
        row["chosen"][0]["content"], row["rejected"][0]["content"],
        f"{meta['chosen']['candidate']}>{meta['rejected']['candidate']}",
        meta["confidence"], meta["margin"],
    )  # fmt: skip


# what the hand-built store gives (stores.COMPARISONS): s-a 3-1 for a; a-b 2-2: a tie, no
# pair; a-c 4-0 for c, but on q2 c answered what a did: no pair there; c-d 2-1 with one
# unreadable vote: no majority of the 4, no pair; c-e 3-0 (one unreadable) for the
# incumbent c, and e failed q2. The prompt is the rejected side's; most confident first.
EXPECTED = [
    (("Sa", "q1"), "c1", "a1", "c>a", 1.0, 1.0),
    (("Ss", "q1"), "a1", "s1", "a>s", 0.75, 0.5),
    (("Se", "q1"), "c1", "e1", "c>e", 0.75, 0.75),
    (("Ss", "q2"), "a2", "s2", "a>s", 0.75, 0.5),
]


@pytest.mark.parametrize(
    ("wins", "votes", "expected"),
    [((1, 3), 4, ("new", 0.75)), ((2, 2), 4, None), ((2, 1), 4, None), ((3, 0), 4, ("old", 0.75)),
     ((0, 3), 3, ("new", 1.0)), ((0, 0), 4, None)],
)  # fmt: skip
def test_the_winner_needs_a_strict_majority_of_all_votes(wins, votes, expected) -> None:
    old, new = (Item(None, "r", name, 0.0, name, "k") for name in ("old", "new"))
    verdict = Judgment(old, new, wins=wins, votes=votes).verdict()
    assert (verdict and (verdict[0].candidate, verdict[2])) == expected


def test_judge_pairs_by_hand(tmp_path: Path) -> None:
    judged_run(tmp_path / "runs")
    found = rows(export(tmp_path, ["r6"], level="judge"))
    assert [summary(r) for r in found] == EXPECTED
    meta = found[0]["metadata"]
    assert (meta["level"], meta["task"], json.loads(meta["input"])) == (
        "judge",
        "notes",
        {"question": "q1"},
    )
    assert meta["same_prompt"] is False
    assert meta["chosen"] == {"run": "r6", "candidate": "c", "parent": "", "split": "val",
                              "example": "q1", "trace": "", "model": "fake:notes",
                              "score": 1.0}  # fmt: skip
    assert meta["rejected"]["score"] == 0.0
    # every level at once: the hand-built store has no metric pairs (all scores 0.5)
    assert rows(export(tmp_path, ["r6"], "all.jsonl")) == found


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"min_confidence": 0.8}, EXPECTED[:1]),
        ({"min_confidence": 0.75}, EXPECTED),
        ({"max_per_input": 1}, [EXPECTED[0], EXPECTED[3]]),
        ({"margin": 5.0}, EXPECTED),  # the margin is for scores, not votes
        ({"min_score": 0.9}, EXPECTED[:1]),  # the chosen side's score is its vote share
        ({"same_prompt": True}, []),
        ({"models": ("fake:other",)}, []),
    ],
)
def test_judge_filters(tmp_path: Path, options: dict, expected: list) -> None:
    judged_run(tmp_path / "runs")
    assert [summary(r) for r in rows(export(tmp_path, ["r6"], level="judge", **options))] == (
        expected
    )


def test_min_confidence_is_above_a_tie(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        ExportOptions(min_confidence=0.4)
    judged_run(tmp_path / "runs")
    base = ["export", "dpo", "r6", "-o", str(tmp_path / "x.jsonl"), "--output",
            str(tmp_path / "runs"), "--level", "judge"]  # fmt: skip
    assert main([*base, "--min-confidence", "0.3"]) == 2
    assert "export option 'min_confidence'" in capsys.readouterr().err
    assert main([*base, "--min-confidence", "0.9"]) == 0
    assert "judge 1" in capsys.readouterr().out
    assert [summary(r) for r in rows(tmp_path / "x.jsonl")] == EXPECTED[:1]


def test_a_copy_of_a_comparison_in_another_run_adds_nothing(tmp_path: Path) -> None:
    judged_run(tmp_path / "runs")
    judged_run(tmp_path / "runs", run_id="r7", only=("a",))  # s-a again, on q1, same requests
    found = rows(export(tmp_path, ["r7", "r6"], level="judge"))
    assert [summary(r) for r in found] == EXPECTED
    assert {r["metadata"]["chosen"]["run"] for r in found} == {"r6"}
    alone = rows(export(tmp_path, ["r7"], "r7.jsonl", level="judge"))
    assert [summary(r) for r in alone] == [EXPECTED[1]]
    again = export(tmp_path, ["r6", "r7"], "again.jsonl", level="judge")
    assert again.read_bytes() == (tmp_path / "out" / "pairs.jsonl").read_bytes()


def test_kto_and_listwise_of_judge_pairs(tmp_path: Path) -> None:
    judged_run(tmp_path / "runs")
    found = rows(export(tmp_path, ["r6"], format="kto", level="judge"))
    # a1 was chosen over s1 and rejected for c1 on q1, on the same messages: left out
    assert [(r["prompt"][0]["content"], r["completion"][0]["content"], r["label"],
             r["metadata"]["confidence"]) for r in found] == [
        ("Sc", "c1", True, 1.0), ("Ss", "s1", False, 0.75), ("Se", "e1", False, 0.75),
        ("Sa", "a2", True, 0.75), ("Ss", "s2", False, 0.75),
    ]  # fmt: skip
    # vote shares of different comparisons do not rank answers against each other
    assert rows(export(tmp_path, ["r6"], "l.jsonl", format="listwise", level="judge")) == []


def test_trl_and_kto_judge_rows_load_with_datasets(tmp_path: Path) -> None:
    import datasets

    judged_run(tmp_path / "runs")
    for fmt, columns, count in (("trl", {"prompt", "chosen", "rejected", "metadata"}, 4),
                                ("kto", {"prompt", "completion", "label", "metadata"}, 5)):  # fmt: skip
        path = export(tmp_path, ["r6"], f"{fmt}.jsonl", format=fmt, level="judge")
        loaded = datasets.load_dataset("json", data_files=str(path), split="train",
                                       cache_dir=str(tmp_path / "hf"))  # fmt: skip
        assert set(loaded.column_names) == columns and len(loaded) == count
        assert loaded[0]["metadata"]["level"] == "judge"
    assert loaded["metadata"][0]["confidence"] == 1.0


# -- a scripted SPO run ------------------------------------------------------------------------

PLANTED = "sk-test-PLANTED-judge-0123456789"


async def test_a_scripted_spo_run_gives_the_winning_rewrites_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    path = write_qa_task(tmp_path)
    result = await aoptimize(path, backends={"task": FakeBackend(task_model),
                                             "optimizer": FakeBackend(optimizer_model),
                                             "judge": FakeBackend(judge_model)})  # fmt: skip
    # as in tests/optimizers/test_spo.py: round 1 ("Be kind.") answered as the seed did, 2-2;
    # round 2 ("Be brief.") won 4-0 with short answers; round 3 answered as round 2 did, 1-3
    assert result.best.params["system"] == SEED_PROMPT + EDITS[1]
    runs = tmp_path / "traces"
    out = tmp_path / "out" / "judge.jsonl"
    report = export_preferences([result.run_id], out, output_dir=runs,
                                options=ExportOptions(level="judge"))  # fmt: skip
    found = rows(out)
    assert report.by_level["judge"] == len(found) == 3  # one pair per validation input
    for row in found:
        system, user = (m["content"] for m in row["prompt"])
        assert system == SEED_PROMPT  # the exact messages the losing seed was sent
        assert row["chosen"][0]["content"] == user.split()[-1]  # the brief answer
        sent = LLMRequest(messages=(Message("system", system), Message("user", user)))
        assert row["rejected"][0]["content"] == task_model(sent)  # the seed's long answer
        meta = row["metadata"]
        assert (meta["level"], meta["confidence"], meta["margin"]) == ("judge", 1.0, 1.0)
        assert meta["rejected"]["candidate"] == result.seed.id
        assert meta["chosen"]["candidate"] == result.best.id
    assert len({json.loads(r["metadata"]["input"])["question"] for r in found}) == 3
    # nothing of the environment in the export, the report or `promptopt show`
    write_report(result.run_id, out=tmp_path / "out" / "report.html", output_dir=runs)
    assert main(["show", result.run_id, "--output", str(runs)]) == 0
    written = [p.read_text(encoding="utf-8") for p in (tmp_path / "out").iterdir()]
    assert len(written) == 2
    for text in [*written, capsys.readouterr().out]:
        assert "PLANTED" not in text

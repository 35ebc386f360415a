"""Every summary of a run gives the majority class, the McNemar p-value and the gain's interval.

A scripted sentiment run: the fake model answers "positive" unless its exemplars
show both labels, so the seed is right only on positive rows and the exemplar
search finds a best that is right everywhere. The numbers are checked against
the test split's labels by hand (McNemar with no losses is ``2 / 2**wins``).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from markupsafe import escape
from rich.console import Console

from promptopt.api import OptimizeResult, optimize
from promptopt.cli import main
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest
from promptopt.report.facts import RunFacts
from promptopt.report.html import render_report
from promptopt.report.show import print_run
from promptopt.report.summary import print_summary
from promptopt.stats import compare, p_text
from promptopt.store import RunStore

WORDS = {"positive": ["great", "lovely", "fine"], "negative": ["awful", "dull", "poor"]}
TASK = """\
name: significance
seed: 3
program:
  system: "Classify the sentiment."
  user: "Review: {text}"
  trainable: [exemplars]
  choices: [positive, negative]
  max_tokens: 3
data: {path: rows.jsonl, inputs: [text], target: label, split: {train: 12, val: 12, test: 24}}
metric: {kind: exact}
models: {task: "fake:positive"}
optimizer: {name: exemplars, config: {k: 2, num_sets: 4, mutations: 1, per_step: 2}}
budget: {max_calls: 200}
concurrency: 2
cache: {policy: "off"}
"""


def picky(request: LLMRequest) -> str:
    """'positive' unless the exemplars show both labels; then it reads the words."""
    shown = {m.content for m in request.messages if m.role == "assistant"}
    if {"positive", "negative"} <= shown:
        text = request.messages[-1].content
        return "negative" if any(w in text for w in WORDS["negative"]) else "positive"
    return "positive"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> OptimizeResult:
    folder = tmp_path_factory.mktemp("significance")
    rows = [{"text": f"item {i} was {WORDS[label][i % 3]}", "label": label}
            for i in range(48) for label in [("positive", "negative")[i % 2]]]  # fmt: skip
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text(TASK)
    return optimize(folder / "task.yaml", output=folder / "traces",
                    backends={"task": FakeBackend(picky)})  # fmt: skip


def _printed(draw, value) -> str:
    out = io.StringIO()
    draw(value, Console(file=out, width=220))
    return out.getvalue()


def _test_labels(run: OptimizeResult) -> Counter[str]:
    with RunStore.open(run.run_dir) as store:
        rows = store.evaluations(candidate_id=run.seed.id, split="test")
    return Counter(r["target"] for r in rows)


def test_the_run_summary_shows_the_majority_class_the_p_value_and_the_interval(run) -> None:
    labels = _test_labels(run)
    wins = labels["negative"]  # the seed said "positive" to each; the best read them right
    assert run.best.id != run.seed.id and run.scores["best_test"] == 1.0
    c = run.comparison
    assert c is not None
    assert (c.wins, c.losses, c.ties) == (wins, 0, labels["positive"])
    assert c.p_value == 2 / 2**wins and c.gain == wins / 24
    label, count = min(labels.items(), key=lambda kv: (-kv[1], kv[0]))
    assert c.majority_test == (label, count / 24)
    assert c.interval is not None and 0 < c.interval[0] <= c.gain <= c.interval[1] <= 1
    assert c.val_to_test_drop == run.scores["best_val"] - 1.0
    text = _printed(print_summary, run)
    assert f"test {count / 24:.3f} ({label!r})" in text
    assert (f"best vs seed on test (24 examples): {wins} wins, 0 losses, "
            f"{p_text(2 / 2**wins)} (McNemar exact), gain {c.gain:+.3f} "
            f"(95% interval {c.interval[0]:+.3f} to {c.interval[1]:+.3f})") in text  # fmt: skip
    assert "validation to test, best:" in text and "note:" not in text  # nothing to warn of


def test_the_store_gives_show_and_the_report_the_same_comparison(run) -> None:
    with RunStore.open(run.run_dir) as store:
        facts = RunFacts.load(store)
        page = render_report(store)
    assert facts.comparison == run.comparison
    shown = _printed(print_run, facts)
    for line in run.comparison.lines():
        assert line in shown
        assert str(escape(line)) in page  # as jinja escapes it
    assert 'id="candidates"' in page and 'id="significance"' in page
    assert facts.best is not None and facts.seed is not None and not facts.best.partial
    # racing may drop candidates early: those are partial, with fewer rows than the seed
    assert all(c.val_rows < facts.seed.val_rows for c in facts.candidates if c.partial)


def test_cli_summary_on_a_run_that_gains_nothing(tmp_path: Path, capsys) -> None:
    rows = [{"text": f"item {i}", "label": ("positive", "negative", "negative")[i % 3]}
            for i in range(48)]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(TASK.replace("max_calls: 200", "max_calls: 30"))
    assert main(["optimize", str(tmp_path / "task.yaml"), "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "majority class (always its label): validation" in out
    assert "best vs seed on test (24 examples): 0 wins, 0 losses, p = 1.000 (McNemar exact)" in out
    assert "note: the best does not beat the majority class" in out  # always "positive": 1 in 3
    assert "note: the gain over the seed is not significant" in out


def test_a_summary_without_test_scores_has_no_comparison_lines() -> None:
    result = SimpleNamespace(
        run_id="r", scores={"seed_val": 0.5, "best_val": 1.0, "seed_test": None, "best_test": None},
        invalid={"seed_test": None, "best_test": None}, usage={}, test_usage={}, steps=1,
        stopped="max_steps", wall_s=1.0, best_prompt_path=Path("p.txt"), comparison=None,
    )  # fmt: skip
    assert "McNemar" not in _printed(print_summary, result)


def test_a_summary_prints_what_it_is_given(tmp_path: Path) -> None:
    c = compare({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 1.0}, val_targets=["[x]", "y"],
                test_targets=["[x]", "[x]"], best_val=1.0)  # fmt: skip
    result = SimpleNamespace(
        run_id="r", scores={"seed_val": 0.5, "best_val": 1.0, "seed_test": 0.5, "best_test": 1.0},
        invalid={"seed_test": 0, "best_test": 0}, usage={}, test_usage={}, steps=1,
        stopped="max_steps", wall_s=1.0, best_prompt_path=tmp_path / "p.txt", comparison=c,
    )  # fmt: skip
    text = _printed(print_summary, result)
    assert "validation 0.500 ('[x]'), test 1.000 ('[x]')" in text  # a label is never markup
    assert "note: the best does not beat the majority class (1.000 vs 1.000 on test, " \
           "always answering '[x]')" in text  # fmt: skip
    assert "1 wins, 0 losses, p = 1.000" in text


def test_a_candidate_scored_on_part_of_validation_is_partial(tmp_path: Path) -> None:
    task = {"name": "partial", "program": {"user": "{q}", "choices": ["a", "b"]}}
    with RunStore.create(tmp_path, task=task) as store:
        rows = {f"v{i}": ({"q": f"question {i}"}, "a" if i < 3 else "b") for i in range(4)}
        shown = [{"inputs": rows["v3"][0], "output": "b"}]
        for cid, params, val in [("seed", {"x": 0}, "1100"), ("cut", {"x": 1}, "11"),
                                 ("shows", {"x": [*shown]}, "111")]:  # fmt: skip
            store.add_candidate(cid, params, parent_id=None if cid == "seed" else "seed",
                                step=0 if cid == "seed" else 1,
                                origin="seed" if cid == "seed" else "proposal")  # fmt: skip
            for (example_id, (inputs, target)), score in zip(rows.items(), val, strict=False):
                store.add_evaluation(candidate_id=cid, split="val", example_id=example_id,
                                     inputs=inputs, target=target, output=target,
                                     score=float(score), valid=True)  # fmt: skip
        for cid, scores in [("seed", "10"), ("shows", "11")]:
            for i, score in enumerate(scores):
                store.add_evaluation(candidate_id=cid, split="test", example_id=f"t{i}",
                                     inputs={"q": f"test {i}"}, target="ab"[i], output="a",
                                     score=float(score), valid=True)  # fmt: skip
        store.checkpoint(step=1, state={"best_id": "shows"})
        facts = RunFacts.load(store)
        page = render_report(store)
    partial = {c.id: c.partial for c in facts.candidates}
    assert partial == {"seed": False, "cut": True, "shows": False}  # v3 is shown, not cut
    assert facts.by_id["cut"].val == 1.0  # a mean over 2 of 4 rows: never the best
    c = facts.comparison
    assert c is not None and (c.wins, c.losses, c.ties) == (1, 0, 1)
    assert c.majority_val == ("a", 0.75) and c.majority_test == ("a", 0.5)
    assert c.best_val == 1.0 and c.val_to_test_drop == 0.0
    assert "3 candidates (1 partial: scored on part of validation)" in _printed(print_run, facts)
    assert page.count('<span class="note">partial</span>') == 1


def test_every_summary_notes_a_label_list_that_is_not_the_choices(tmp_path: Path, capsys) -> None:
    rows = [{"text": f"item {i} was {WORDS[label][i % 3]}", "label": label}
            for i in range(48) for label in [("positive", "negative")[i % 2]]]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TASK.replace("Classify the sentiment.", "Say positive, negative or neutral.")
    (tmp_path / "task.yaml").write_text(task.replace("max_calls: 200", "max_calls: 60"))
    assert main(["optimize", str(tmp_path / "task.yaml"), "--output", str(tmp_path)]) == 0
    note = ("note: the best's 'system' lists 'neutral' with the labels, though the choices are "
            "positive, negative")  # fmt: skip
    assert note in capsys.readouterr().out
    assert main(["show", "latest", "--output", str(tmp_path)]) == 0
    assert note in capsys.readouterr().out

"""``promptopt export dpo|kto|listwise|traces`` and what an export, the report and ``promptopt
show`` never hold: secrets."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest
from stores import reviews_runs, triage_runs

from promptopt.api import aoptimize
from promptopt.cli import main
from promptopt.export import ExportOptions, export_preferences
from promptopt.llm.fakes import FakeBackend
from promptopt.report.html import write_report

PLANTED = "sk-test-PLANTED-0123456789abcdef"
CUSTOM = "custom-PLANTED-key-9876543210"


def test_dpo_command_writes_what_the_api_writes(tmp_path: Path, capsys) -> None:
    reviews_runs(tmp_path / "runs")
    out = tmp_path / "cli.jsonl"
    code = main(["export", "dpo", "r1", "r2", "-o", str(out), "--max-per-input", "1",
                 "--output", str(tmp_path / "runs")])  # fmt: skip
    assert code == 0
    said = capsys.readouterr().out
    assert "output 2" in said and f"wrote 2 rows to {out}" in said
    export_preferences(["r1", "r2"], tmp_path / "api.jsonl", output_dir=tmp_path / "runs",
                       options=ExportOptions(max_per_input=1))  # fmt: skip
    assert out.read_bytes() == (tmp_path / "api.jsonl").read_bytes()
    main(
        ["export", "kto", "r1", "-o", str(tmp_path / "k.jsonl"), "--output", str(tmp_path / "runs")]
    )
    assert all("label" in json.loads(line) for line in (tmp_path / "k.jsonl").open())


def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    reviews_runs(tmp_path / "runs", second=False)
    base = [
        "export",
        "dpo",
        "r1",
        "-o",
        str(tmp_path / "x.jsonl"),
        "--output",
        str(tmp_path / "runs"),
    ]
    assert main([*base, "--margin", "-1"]) == 2
    assert "export option 'margin'" in capsys.readouterr().err
    assert main([*base, "--test-fraction", "1.5"]) == 2
    assert main(["export", "dpo", "nope", "-o", "x", "--output", str(tmp_path / "runs")]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_traces_command_writes_json_lines_and_graphml(tmp_path: Path) -> None:
    triage_runs(tmp_path / "runs")
    out, folder = tmp_path / "traces.jsonl", tmp_path / "graphml"
    assert main(["export", "traces", "r3", "-o", str(out), "--graphml", str(folder),
                 "--output", str(tmp_path / "runs")]) == 0  # fmt: skip
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(t["id"], t["candidate"], t["score"]) for t in lines] == [
        ("t1", "d1", 1.0), ("t2", "d2", 0.0), ("t3", "d3", 0.0),
    ]  # fmt: skip
    assert [n["name"] for n in lines[0]["nodes"]] == ["topic", "classify", "route"]
    graph = nx.read_graphml(folder / "t1.graphml")
    assert sorted(graph.nodes) == ["0", "1", "2"] and set(graph.edges) == {("0", "1"), ("1", "2")}
    assert json.loads(graph.nodes["0"]["llm_calls"])[0]["text"] == "payment"


TASK = """\
name: secrets
program:
  system: "Classify the sentiment."
  user: "Review: {text}"
  trainable: [exemplars]
  choices: [positive, negative]
data:
  path: rows.jsonl
  inputs: [text]
  target: label
  split: {train: 10, val: 10, test: 10, seed: 0}
metric: {kind: exact}
models:
  task: {model: "fake:positive", api_key_env: MY_PLANTED_KEY}
  optimizer: {model: "fake:positive", api_key_env: OPENAI_API_KEY}
optimizer: {name: exemplars, config: {k: 2, num_sets: 3, mutations: 1, per_step: 2}}
budget: {max_calls: 200}
cache: {policy: off}
output: OUTPUT
"""


async def test_no_export_or_report_holds_a_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setenv("MY_PLANTED_KEY", CUSTOM)
    rows = [{"text": f"item {i} was {'good' if i % 2 else 'bad'}",
             "label": "positive" if i % 2 else "negative"} for i in range(30)]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = tmp_path / "task.yaml"
    task.write_text(TASK.replace("OUTPUT", json.dumps(str(tmp_path / "runs"))))

    def model(request) -> str:  # right on 'good' reviews only when shown a negative exemplar
        shown = {m.content for m in request.messages if m.role == "assistant"}
        return (
            "negative"
            if "negative" in shown and "bad" in request.messages[-1].content
            else "positive"
        )

    result = await aoptimize(task, backends={"task": FakeBackend(model)})
    out = tmp_path / "exports"
    runs = ["--output", str(tmp_path / "runs")]
    for kind in ("dpo", "kto", "listwise"):
        args = ["export", kind, result.run_id, "-o", str(out / f"{kind}.jsonl"), *runs]
        assert main([*args, "--test-fraction", "0.3"]) == 0
    assert main(["export", "traces", result.run_id, "-o", str(out / "t.jsonl"),
                 "--graphml", str(out / "g"), *runs]) == 0  # fmt: skip
    # the same run's HTML report (by the API and by the CLI) and what `promptopt show` prints
    write_report(result.run_id, out=out / "report.html", output_dir=tmp_path / "runs")
    assert main(["report", result.run_id, "-o", str(out / "cli-report.html"), *runs]) == 0
    said = capsys.readouterr().out  # what the export and report commands printed
    assert main(["show", result.run_id, *runs]) == 0
    shown = capsys.readouterr().out
    assert result.run_id in shown and "cost" in shown  # it printed the run, not an error
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 9 and (out / "dpo.jsonl").stat().st_size > 0
    assert "<html" in (out / "report.html").read_text(encoding="utf-8").lower()
    written = [p.read_text(encoding="utf-8") for p in files] + [said, shown]
    for text in written:
        assert PLANTED not in text and CUSTOM not in text
        assert "PLANTED" not in text

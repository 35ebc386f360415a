"""Runs whose optimizer proposes code: the sandbox's secure default and a key that never leaks.

A planted fake key sits in this process's environment while OptoPrime (scripted)
proposes a ``route`` that tries every way to read it. The code runs isolated,
finds nothing, and the key appears in no trace, store row, run file, export or
optimizer prompt. Where isolation cannot work, the run refuses before anything
is spent unless the task opts out.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from triage_fixture import route_source, triage_model

from promptopt.api import aoptimize
from promptopt.cli import main
from promptopt.errors import SandboxError
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
from promptopt.sandbox import runner
from promptopt.sandbox.isolation import isolation_problem
from promptopt.store import RunStore

PLANTED = "sk-PLANTED-run-level-9876543210"
STEAL = route_source("""
    import os
    found = []
    paths = [f"/proc/{os.getppid()}/environ", "/proc/1/environ", "/proc/self/environ"]
    paths += [f"/proc/{pid}/environ" for pid in range(1, 64)]
    for path in paths:
        try:
            found.append(open(path, errors="replace").read())
        except OSError:
            pass
    found += [f"{k}={v}" for k, v in os.environ.items() if "KEY" in k or "sk-" in v]
    return ("stolen:" + "|".join(found)) if found else team
""")
REPLIES = [
    json.dumps({"reasoning": "r", "answer": "", "suggestion": {"route": STEAL}}),
    json.dumps({"reasoning": "r", "answer": "", "suggestion": {"instruction": "Name the team."}}),
]


def opted_out(task: Path) -> Path:
    spec = yaml.safe_load(task.read_text())
    spec["sandbox"] = {"isolation": "none", "timeout_s": 20}
    task.write_text(yaml.safe_dump(spec, sort_keys=False))
    return task


@pytest.mark.skipif(isolation_problem() is not None, reason=f"no isolation: {isolation_problem()}")
async def test_a_planted_key_reaches_no_trace_row_file_export_or_prompt(
    triage_task, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setenv("TRIAGE_SERVICE_KEY", PLANTED)
    optimizer_model = ScriptedBackend(REPLIES)
    result = await aoptimize(
        triage_task(optimizer="optoprime", config={"steps": 2}),
        backends={"task": FakeBackend(triage_model), "optimizer": optimizer_model},
    )
    with RunStore.open(result.run_dir) as store:
        stealer = next(c for c in store.candidates() if c["meta"].get("updated") == ["route.code"])
        traces = store.traces(candidate_id=stealer["id"], split="val")
        routes = [next(n for n in t.nodes if n.name == "route") for t in traces]
    assert traces and all(r.error is None for r in routes)  # the stealing code ran, and ...
    assert not any(str(r.output).startswith("stolen:") for r in routes)  # ... found nothing
    assert len(optimizer_model.requests) == 2
    prompts = "\n".join(m.content for r in optimizer_model.requests for m in r.messages)
    assert "def route" in prompts and PLANTED not in prompts
    # ... nor in what the run exports: its traces, with GraphML (this run's candidates score
    # alike per input, so it has no preference pairs; tests/export checks a key in those)
    exported = Path(result.run_dir).parent.parent / "exported"
    assert main(["export", "traces", result.run_id, "-o", str(exported / "traces.jsonl"),
                 "--graphml", str(exported / "graphml"),
                 "--output", str(Path(result.run_dir).parent)]) == 0  # fmt: skip
    written = [p for p in exported.rglob("*") if p.is_file()]
    assert "route" in (exported / "traces.jsonl").read_text()
    assert any(p.suffix == ".graphml" for p in written)
    files = [p for p in Path(result.run_dir).rglob("*") if p.is_file()] + written
    assert any(p.name == "run.sqlite" for p in files)
    for path in files:
        assert PLANTED.encode() not in path.read_bytes(), path
    assert PLANTED not in repr(result)


FORGER = route_source("""
    import os
    depth = 200_000  # a forged answer nested past any JSON parser's depth
    os.write(3, b'{"kind": "ok", "error": null, "value": ' + b"[" * depth + b"]" * depth + b"}")
    os._exit(0)
""")


@pytest.mark.skipif(isolation_problem() is not None, reason=f"no isolation: {isolation_problem()}")
async def test_a_forged_answer_is_a_proposed_code_error_on_its_node(triage_task) -> None:
    """The answer channel's worst case fails that example's node; the run goes on."""
    replies = [json.dumps({"reasoning": "r", "answer": "", "suggestion": {"route": FORGER}})]
    result = await aoptimize(
        triage_task(optimizer="optoprime", config={"steps": 1}),
        backends={"task": FakeBackend(triage_model), "optimizer": ScriptedBackend(replies)},
    )
    with RunStore.open(result.run_dir) as store:
        forger = next(c for c in store.candidates() if c["meta"].get("updated") == ["route.code"])
        traces = store.traces(candidate_id=forger["id"], split="val")
        candidates = store.candidates()
    routes = [next(n for n in t.nodes if n.name == "route") for t in traces]
    assert routes and all("ProposedCodeError" in str(r.error) for r in routes), routes[0].error
    assert len(candidates) == 2 and forger["id"] != candidates[0]["id"]  # the seed, then it


@pytest.fixture
def no_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without bubblewrap."""
    monkeypatch.setattr(runner, "isolation_problem", lambda: "bubblewrap is not installed")


async def test_without_isolation_a_code_run_refuses_before_spending(triage_task, no_isolation):
    asked = []
    task_model = FakeBackend(lambda request: asked.append(request) or triage_model(request))
    with pytest.raises(SandboxError, match=r"isolation: none"):
        await aoptimize(
            task := triage_task(optimizer="optoprime", config={"steps": 1}),
            backends={"task": task_model, "optimizer": ScriptedBackend([])},
        )
    assert asked == []
    assert not (task.parent.parent / "traces").exists()  # no run folder either


def test_without_isolation_the_cli_says_so_in_one_line(triage_task, no_isolation, capsys):
    code = main(["optimize", str(triage_task(models={"task": "fake:triage"}))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert err[0].startswith("promptopt: error: proposed code cannot run isolated")
    assert "sandbox: {isolation: none}" in err[0]


async def test_the_opt_out_runs_the_code_and_warns_once(triage_task, no_isolation, caplog):
    caplog.set_level(logging.WARNING, logger="promptopt.sandbox")
    optimizer_model = ScriptedBackend(REPLIES[:1])
    result = await aoptimize(
        opted_out(triage_task(optimizer="optoprime", config={"steps": 1})),
        backends={"task": FakeBackend(triage_model), "optimizer": optimizer_model},
    )
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("promptopt.sandbox")]
    assert len(warnings) == 1 and "isolation is off" in warnings[0]
    with RunStore.open(result.run_dir) as store:
        stealer = next(c for c in store.candidates() if c["meta"].get("updated") == ["route.code"])
        (trace, *_) = store.traces(candidate_id=stealer["id"], split="val")
    route = next(n for n in trace.nodes if n.name == "route")
    assert route.error is None  # the proposed code ran, unisolated, as the user asked

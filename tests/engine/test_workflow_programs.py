"""Python workflows as task programs: discovered parameters, traced runs, sandboxed code."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from promptopt.api import aoptimize
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest
from promptopt.session import build_parts
from promptopt.store import RunStore
from promptopt.task import load_task
from promptopt.task.program import PythonProgram

WORKFLOW = '''
"""Route a message: one LLM node, then trainable keyword rules."""

from promptopt import node, param
from promptopt.llm.types import LLMRequest, Message

TEAMS = ("billing", "technical")
instruction = param("Which team handles this message?", name="instruction")
exemplars = param([], name="exemplars", kind="exemplars", description="shown as chat turns")


@node
async def classify(message, instruction, exemplars, llm):
    """Ask the model for one team."""
    messages = [Message("system", instruction)]
    for ex in exemplars:
        messages += [Message("user", ex["inputs"]["message"]), Message("assistant", ex["output"])]
    messages.append(Message("user", message))
    request = LLMRequest(messages=tuple(messages), choices=TEAMS, max_tokens=4)
    return (await llm.acomplete(request)).text


@node(trainable=True)
def route(team, message):
    """Keyword rules that override the model."""
    return team


async def run(inputs, llm):
    team = await classify(inputs["message"], instruction.value, exemplars.value, llm)
    return route(team, inputs["message"])
'''

ROWS = [
    {"message": "I want a refund for order 1234", "team": "billing"},
    {"message": "The app crashes on start after the update", "team": "technical"},
    {"message": "Please refund the duplicate charge", "team": "billing"},
    {"message": "Login page shows error 500 every time", "team": "technical"},
    {"message": "Why was I charged twice, I need a refund", "team": "billing"},
    {"message": "Upload spins forever and never finishes", "team": "technical"},
    {"message": "Can I get a refund for my annual plan", "team": "billing"},
    {"message": "Sync stopped working on my laptop", "team": "technical"},
]

FIXED_ROUTE = textwrap.dedent('''
    def route(team, message):
        """Keyword rules that override the model."""
        return "billing" if "refund" in message.lower() else "technical"
''').lstrip()


def lazy_model(request: LLMRequest) -> str:
    """Says 'billing' unless shown an exemplar; then reads the message like a good model."""
    shown = sum(1 for m in request.messages if m.role == "assistant")
    if not shown:
        return "billing"
    return "billing" if "refund" in request.messages[-1].content.lower() else "technical"


def write_task(folder: Path, *, optimizer: str = "exemplars", config: str = "{k: 1}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflow.py").write_text(WORKFLOW)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    task = folder / "task.yaml"
    task.write_text(
        textwrap.dedent(f"""
        name: route
        program: {{entry: "workflow:run"}}
        data:
          path: rows.jsonl
          inputs: [message]
          target: team
          split: {{train: 2, val: 4, test: 2, seed: 1}}
        metric: {{kind: exact}}
        models: {{task: "fake:lazy"}}
        optimizer: {{name: {optimizer}, config: {config}}}
        budget: {{max_calls: 200}}
        cache: {{policy: "off"}}
        output: {folder / "traces"}
        """)
    )
    return task


def test_parameters_are_discovered_with_their_kinds(tmp_path):
    write_task(tmp_path)
    program = PythonProgram(entry="workflow:run", base_dir=tmp_path)
    assert program.trainable == ("instruction", "exemplars", "route.code")
    assert program.kinds == {"instruction": "text", "exemplars": "exemplars", "route.code": "code"}
    seed = program.seed_params()
    assert seed["route.code"].startswith("def route(team, message):")
    assert seed["exemplars"] == []


def test_two_task_folders_with_the_same_module_name_do_not_mix(tmp_path):
    write_task(tmp_path / "a")
    write_task(tmp_path / "b")
    (tmp_path / "b" / "workflow.py").write_text(
        WORKFLOW.replace("Which team handles this message?", "Another instruction.")
    )
    a = PythonProgram(entry="workflow:run", base_dir=tmp_path / "a")
    b = PythonProgram(entry="workflow:run", base_dir=tmp_path / "b")
    assert a.seed_params()["instruction"] != b.seed_params()["instruction"]


async def evaluate_candidate(tmp_path: Path, changes: dict) -> tuple:
    spec = load_task(write_task(tmp_path))
    store = RunStore.create(tmp_path / "runs", task={"name": "route"})
    parts = build_parts(spec, store=store, backends={"task": FakeBackend(lazy_model)})
    engine = parts.engine(store)
    params = {**parts.program.seed_params(), **changes}
    evaluated = await engine.evaluate(params, parts.splits.val, split="val")
    return evaluated, store


async def test_a_run_is_traced_stored_and_given_feedback(tmp_path):
    evaluated, store = await evaluate_candidate(tmp_path, {})
    result = evaluated.results[0]
    nodes = {n.name: n for n in result.trace.nodes}
    assert set(nodes) == {"instruction", "exemplars", "route.code", "classify", "route"}
    assert nodes["classify"].parents == (nodes["instruction"].index, nodes["exemplars"].index)
    assert nodes["route"].parents == (nodes["classify"].index, nodes["route.code"].index)
    (call,) = nodes["classify"].llm_calls
    assert call["text"] == "billing" and call["messages"][0]["content"].startswith("Which team")
    (feedback,) = result.trace.feedback
    assert feedback.output == nodes["route"].index
    assert feedback.text().startswith(f"score {result.score.value:g}")
    stored = store.traces(candidate_id=evaluated.candidate.id, split="val")
    assert len(stored) == 4
    assert [t.to_dict() for t in stored] == [r.trace.to_dict() for r in evaluated.results]


async def test_candidate_values_reach_the_params_of_each_run(tmp_path):
    evaluated, _ = await evaluate_candidate(tmp_path, {"instruction": "Route it, please."})
    for result in evaluated.results:
        (call,) = next(n for n in result.trace.nodes if n.name == "classify").llm_calls
        assert call["messages"][0]["content"] == "Route it, please."


async def test_proposed_code_runs_in_the_sandbox_and_changes_the_answers(tmp_path):
    seed, _ = await evaluate_candidate(tmp_path / "seed", {})
    fixed, _ = await evaluate_candidate(tmp_path / "fixed", {"route.code": FIXED_ROUTE})
    assert seed.score < 1.0
    assert fixed.score == 1.0
    route = next(n for n in fixed.results[0].trace.nodes if n.name == "route")
    code = next(n for n in fixed.results[0].trace.nodes if n.name == "route.code")
    assert code.output == FIXED_ROUTE
    assert route.error is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def route(team, message):\n    raise ValueError('no rule')\n", "ValueError: no rule"),
        ("def route(team, message):\n    while True:\n        pass\n", "timeout"),
        ("def route(team message):\n    return team\n", "SyntaxError"),
    ],
)
async def test_failing_proposed_code_fails_its_examples_only(tmp_path, source, expected):
    evaluated, store = await evaluate_candidate(tmp_path, {"route.code": source})
    assert len(evaluated.results) == 4
    for result in evaluated.results:
        assert result.output is None
        assert "route" in result.error and expected in result.error
        route = next(n for n in result.trace.nodes if n.name == "route")
        assert route.error is not None and route.error.startswith("ProposedCodeError")
        assert result.trace.feedback[-1].output == route.index
    assert len(store.evaluations()) == 4


async def test_the_exemplars_optimizer_fills_a_workflow_parameter(tmp_path):
    result = await aoptimize(write_task(tmp_path), backends={"task": FakeBackend(lazy_model)})
    assert result.scores["seed_val"] < result.scores["best_val"] == 1.0
    assert len(result.best.params["exemplars"]) == 1
    assert result.best.params["route.code"].startswith("def route(team, message):")


async def test_promptopt_graph_draws_the_best_candidates_trace(tmp_path, capsys):
    from promptopt.cli import main
    from promptopt.graph.render import pick_trace

    result = await aoptimize(write_task(tmp_path), backends={"task": FakeBackend(lazy_model)})
    with RunStore.open(result.run_dir) as store:
        rows = store.trace_rows()
    assert {r["split"] for r in rows} == {"val", "test"}
    picked = pick_trace(rows, example=None, best=result.best.id)
    assert (picked["candidate_id"], picked["split"]) == (result.best.id, "test")
    example = picked["example_id"]
    out = tmp_path / "graph.dot"
    assert main(["graph", str(result.run_dir), "--example", example, "--format", "dot",
                 "-o", str(out)]) == 0  # fmt: skip
    dot = out.read_text()
    for name in ("instruction", "exemplars", "route.code", "classify", "route"):
        assert name in dot


SYNC_WORKFLOW = """
from promptopt import node, param

instruction = param("Which team handles this message?", name="instruction")


@node
def classify(message, instruction, llm):
    return llm.chat(message, system=instruction, choices=("billing", "technical"), max_tokens=4)


def run(inputs, llm):
    return classify(inputs["message"], instruction.value, llm)
"""


async def test_a_plain_function_workflow_runs_in_a_thread_and_is_traced(tmp_path):
    task = write_task(tmp_path)
    (tmp_path / "workflow.py").write_text(SYNC_WORKFLOW)
    spec = load_task(task)
    store = RunStore.create(tmp_path / "runs", task={"name": "route"})
    parts = build_parts(spec, store=store, backends={"task": FakeBackend(lazy_model)})
    assert parts.program.trainable == ("instruction",)
    params = {"instruction": "Route it."}
    evaluated = await parts.engine(store).evaluate(params, parts.splits.val, split="val")
    for result in evaluated.results:
        assert result.output == "billing"
        classify = next(n for n in result.trace.nodes if n.name == "classify")
        (call,) = classify.llm_calls  # the call made from the worker thread landed on its node
        assert call["messages"][0] == {"role": "system", "content": "Route it."}

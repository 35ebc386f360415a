"""GEPA rewrites code parameters too, in turn with the texts, and shows a workflow's traced
steps: hand-made minibatch scores with a scripted optimizer model, then the example workflow
(tasks/triage, triage_fixture.py) end to end."""

from __future__ import annotations

import random
from string import Template

import pytest
from triage_fixture import route_source, triage_model

from promptopt.api import aoptimize
from promptopt.errors import OptimizerError
from promptopt.llm.fakes import FakeBackend, ScriptedBackend, scripted_llm
from promptopt.llm.types import LLMRequest, Message
from promptopt.optimizers.base import Candidate, Evaluated, ExampleResult, SearchState
from promptopt.optimizers.gepa import GEPA, merge_params
from promptopt.optimizers.rewriters import MarkedRewriter
from promptopt.store import RunStore
from promptopt.task.data import Example
from promptopt.task.metrics import Score

VAL = tuple(Example(f"v{i}", {"text": f"item {i}"}, "ITEM") for i in range(3))
TRAIN = tuple(Example(f"t{i}", {"text": f"item {100 + i}"}, "ITEM") for i in range(6))
RULE = 'def rule(text):\n    """The answer."""\n    return text\n'
NEW_RULE = 'def rule(text):\n    """The answer."""\n    return text.split()[0].upper()\n'
SEED = {"system": "Answer {text}.", "rule.code": RULE}
WHOLE_FUNCTION = (
    'write the whole new source of "rule.code": one Python function with the same name and '
    "arguments as now, standard library only, with any imports inside the function."
)


def state_of(evaluate) -> SearchState:
    """A program with one text and one code parameter; the seed scored 0 on validation."""
    results = tuple(ExampleResult(e, "no", Score(0.0)) for e in VAL)
    seed = Evaluated(Candidate(SEED), "val", results)
    return SearchState(seed=seed.candidate, trainable=("system", "rule.code"), train=TRAIN,
                       val=VAL, program_description="", evaluate=evaluate, history=[seed],
                       kinds={"system": "text", "rule.code": "code"})  # fmt: skip


async def better_than_the_seed(params, examples, **named):
    """Every change answers the minibatch right; the seed answers it wrong."""
    value = 0.0 if dict(params) == SEED else 1.0
    results = tuple(ExampleResult(e, "x", Score(value)) for e in examples)
    return Evaluated(Candidate(params), "train", results)


def config(**more) -> dict:
    return {"minibatch": 2, "merge": False, "retries": 0, **more}


async def test_texts_and_functions_are_rewritten_in_turn():
    llm = scripted_llm("<START>Answer {text} in capitals.<END>", f"<START>{NEW_RULE}<END>")
    gepa, state, rng = GEPA(config(iterations=2)), state_of(better_than_the_seed), random.Random(0)
    (text,) = await gepa.propose(state, llm=llm, rng=rng)
    (code,) = await gepa.propose(state, llm=llm, rng=rng)
    assert text.params == {**SEED, "system": "Answer {text} in capitals."}
    assert text.meta["param"] == "system"
    assert code.params == {**SEED, "rule.code": NEW_RULE}  # the new source, as written
    assert code.meta["param"] == "rule.code"
    assert (gepa.stats["iterations"], gepa.stats["accepted"], gepa.stats["invalid"]) == (2, 2, 0)
    first, second = (r.messages for r in llm.backend.requests)
    assert first[0].content.startswith("You improve one text")
    assert "<TEXT>\nAnswer {text}.\n</TEXT>" in first[1].content
    assert first[1].content.count("Keep the placeholders {text}") == 1
    # the code request shows the function and asks for a whole new one, nothing of placeholders
    assert second[0].content.startswith("You improve one Python function")
    assert f"<CODE>\n{RULE.rstrip()}\n</CODE>" in second[1].content
    said = " ".join(second[1].content.split())
    assert WHOLE_FUNCTION in said
    assert "placeholder" not in said and "<TEXT>" not in said


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("def rule(text):\n    return text.upper(\n", "does not compile"),
        ("def answer(text):\n    return text.upper()\n", "named 'rule'"),
        ("def rule(text, extra):\n    return text.upper()\n", "keep the arguments (text)"),
        (f"# the same function\n{RULE}", None),  # unchanged: a no-op, not invalid
    ],
    ids=["syntax", "name", "arguments", "unchanged"],
)
async def test_a_broken_or_unchanged_function_is_not_proposed(reply, problem):
    asked: list[dict] = []

    async def evaluate(params, examples, **named):
        asked.append(dict(params))
        return await better_than_the_seed(params, examples)

    llm = scripted_llm(f"<START>{reply}<END>", "<START>def rule(text):\n    return 'ITEM'\n<END>")
    gepa = GEPA(config(iterations=1, params=["rule.code"], retries=1))
    (proposal,) = await gepa.propose(state_of(evaluate), llm=llm, rng=random.Random(0))
    assert proposal.params["rule.code"] == "def rule(text):\n    return 'ITEM'\n"
    assert asked == [SEED, proposal.params]  # the broken one never ran
    stats = gepa.stats
    assert (stats["invalid"], stats["noops"]) == ((0, 1) if problem is None else (1, 0))
    retry = llm.backend.requests[1].messages[-1].content
    assert retry.endswith('Write a different version of the function "rule.code" now, its '
                          "whole source wrapped in <START> and <END>.")  # fmt: skip
    if problem is None:
        assert retry.startswith("That version is the current function")
    else:
        assert problem in retry


async def test_a_program_with_no_text_or_code_parameter_is_refused():
    state = state_of(better_than_the_seed)
    state.trainable, state.kinds = ("shots",), {"shots": "exemplars"}
    with pytest.raises(OptimizerError, match="rewrites text or code parameters"):
        await GEPA().propose(state, llm=scripted_llm(), rng=random.Random(0))
    with pytest.raises(OptimizerError, match="not trainable text or code parameters"):
        await GEPA({"params": ["shots"]}).propose(state, llm=scripted_llm(), rng=random.Random(0))


async def test_an_unchanged_function_is_a_noop_for_the_rewriter():
    stats: dict[str, int] = {}
    rewriter = MarkedRewriter(stats=stats, retries=0, retry=Template("$problem"))
    request = LLMRequest(messages=(Message("user", "rewrite it"),), tag="optimizer")
    laid_out_anew = "```python\ndef rule(text):\n    '''The answer.'''\n    return (text)\n```"
    for reply in (f"<START>{RULE}<END>", f"<START>{laid_out_anew}<END>"):
        found = await rewriter.versions(
            scripted_llm(reply), request, name="rule.code", base=SEED, count=1, taken=set(),
            fields=["text"], rng=random.Random(0), kind="code",
        )  # fmt: skip
        assert found.values == [] and found.key is None
    assert (stats["noops"], stats["invalid"]) == (2, 0)


# -- the example workflow ---------------------------------------------------------------------

MORE_RULES = route_source("""
    text = message.lower()
    rules = [
        (("refund", "invoice", "charged", "payment", "subscription"), "billing"),
        (("delivery", "package", "courier", "tracking", "item", "arrived"), "shipping"),
        (("password", "log in", "login", "sign-on", "email address"), "account"),
    ]
    for words, chosen in rules:
        if any(word in text for word in words):
            return chosen
    return team
""")


async def test_a_workflow_shows_its_traced_steps_and_its_code_is_rewritten(triage_task):
    # the first reflection (the instruction) changes nothing the fake model reads: rejected;
    # the second rewrites the route function, which the engine runs in the sandbox
    optimizer_model = ScriptedBackend(["<START>Name the team.<END>", f"<START>{MORE_RULES}<END>"])
    result = await aoptimize(
        triage_task(optimizer="gepa", config={"iterations": 2, "minibatch": 3, "merge": False}),
        backends={"task": FakeBackend(triage_model), "optimizer": optimizer_model},
    )
    assert optimizer_model.pending == 0
    first, second = (r.messages[1].content for r in optimizer_model.requests)
    assert 'It uses a text named "instruction"' in first
    assert 'It runs a Python function, the parameter "route.code"' in second
    assert "<CODE>\ndef route(team: str, topic: str, message: str) -> str:\n" in second
    for shown in (first, second):
        example = shown.split("## Input 1\n")[1].split("\n\n")[0]
        lines = example.splitlines()
        # inputs, output, expected output (feedback), then the run's steps and values
        steps = lines.index("steps traced in this run:")
        values = lines.index("values computed along the way:")
        assert lines[0].startswith("message: ") and lines[1].startswith("output: ")
        assert lines[2].startswith("expected output: ")
        assert [line.split(" = ")[1].split("(")[0] for line in lines[steps + 1 : values]] == [
            "classify", "route"]  # fmt: skip
        assert lines[values + 1].startswith("topic0 = ")
        assert lines[values + 2].startswith("classify3 = ")
    stats = result.optimizer_stats
    assert (stats["iterations"], stats["rejected"], stats["accepted"]) == (2, 1, 1)
    assert result.best.params["route.code"] == MORE_RULES
    with RunStore.open(result.run_dir) as store:
        (child,) = [c for c in store.candidates() if c["params"]["route.code"] == MORE_RULES]
    assert child["meta"]["param"] == "route.code"


def test_a_function_and_a_text_changed_on_two_sides_are_merged():
    root = Evaluated(Candidate(SEED), "val", ())
    text = Evaluated(Candidate({**SEED, "system": "Say {text}."}), "val", ())
    code = Evaluated(Candidate({**SEED, "rule.code": NEW_RULE}), "val", ())
    merged = merge_params(text, code, root.candidate.params, ("system", "rule.code"))
    assert merged == {"system": "Say {text}.", "rule.code": NEW_RULE}

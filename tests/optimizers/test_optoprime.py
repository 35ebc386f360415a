"""OptoPrime: the meta-prompt it renders from traces, and how it reads good and bad replies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from typing import Any

import pytest
from snapshot import check_snapshot

from promptopt.errors import BadRequestError
from promptopt.graph import node, op_of, param, trace
from promptopt.graph.backward import backward
from promptopt.llm.fakes import scripted_llm
from promptopt.optimizers.base import (
    PROMPT_SHAPE,
    Candidate,
    Evaluated,
    ExampleResult,
    SearchState,
)
from promptopt.optimizers.meta_prompts import template_parts
from promptopt.optimizers.optoprime import OptoPrime, OptoPrimeConfig
from promptopt.optimizers.registry import get
from promptopt.task.data import Example
from promptopt.task.metrics import Score

SNAPSHOT = "optoprime_meta_prompt.txt"


class Client:
    """Stands in for an LLM client: its repr carries an address that changes every run."""


instruction = param(
    "Answer with the capital city.", name="instruction", description="what the model is told"
)


@node
def ask(question, instruction, client):
    """Ask the model: here a lookup table stands in for it."""
    known = {"France": "Paris!", "Italy": "Rome!", "Spain": "Madrid!"}
    country = question.rsplit(" ", 1)[-1].rstrip("?")
    return f"{instruction.split()[0]}: {known.get(country, 'Unknown!')}"


@node
def extract(reply):
    """Keep the part after the colon."""
    return reply.split(":", 1)[1]


@node(trainable=True)
def tidy(answer):
    """Normalise the final answer."""
    return answer.strip()


QUESTIONS = {
    "q1": ("What is the capital of France?", "paris"),
    "q2": ("What is the capital of Italy?", "rome"),
    "q3": ("What is the capital of Peru?", "lima"),
}


async def _never(params, examples):  # pragma: no cover - the optimizer never probes
    raise AssertionError("OptoPrime does not probe")


def _result(example: Example) -> ExampleResult:
    with trace() as t:
        out = tidy(extract(ask(example.inputs["question"], instruction.value, Client())))
    ok = out == example.target
    feedback = f"score {int(ok)}; expected {example.target!r}, got {out!r}"
    backward(out, feedback, trace=t)
    return ExampleResult(example, out, Score(float(ok), feedback=feedback), None, t)


def _state(*, traced: bool = True) -> SearchState:
    examples = tuple(Example(k, {"question": q}, a) for k, (q, a) in QUESTIONS.items())
    results = tuple(
        _result(e) if traced else ExampleResult(e, "Paris!", Score(0.0, feedback="wrong"))
        for e in examples
    )
    seed = Candidate({"instruction": instruction.peek(), "tidy.code": tidy_source()})
    return SearchState(
        seed=seed,
        trainable=("instruction", "tidy.code"),
        train=examples[:1],
        val=examples,
        program_description="Answer geography questions with a lower-case city name.",
        evaluate=_never,
        history=[Evaluated(seed, "val", results)],
        kinds={"instruction": "text", "tidy.code": "code"},
    )


def tidy_source() -> str:
    return op_of(tidy).param.peek()


NEW_CODE = "def tidy(answer):\n    return answer.strip().rstrip('!').lower()\n"
GOOD = json.dumps(
    {"reasoning": "the answers keep a '!' and capitals", "answer": "paris",
     "suggestion": {"tidy.code": NEW_CODE}}
)  # fmt: skip


def _render(request) -> str:
    system, user = (m.content for m in request.messages)
    return f"{system}\n==== user ====\n{user}\n"


def _requests(llm) -> list[Any]:
    return llm.backend.requests


# -- the meta-prompt ---------------------------------------------------------------------


def test_meta_prompt_snapshot():
    state = _state()
    optimizer = OptoPrime()
    rng = random.Random(0)
    base = state.best
    picked = optimizer._pick(base, rng, set())
    text = _render(optimizer.build_request(state, picked, base=base))
    check_snapshot(SNAPSHOT, text)
    assert len(text) < 5000
    for section in ("#Instruction", "#Code", "#Documentation", "#Variables", "#Constraints",
                    "#Inputs", "#Others", "#Outputs", "#Feedback"):  # fmt: skip
        assert section in text
    assert "\n#History\n" not in text  # nothing to remember yet
    assert " at 0x" not in text and "Client object" not in text


def test_rendering_is_deterministic():
    # two separate runs of the workflow: new traces, new client objects, same request
    first, second = _state(), _state()
    a = OptoPrime().build_request(first, first.best.results, base=first.best)
    b = OptoPrime().build_request(second, second.best.results, base=second.best)
    assert a == b and a.key() == b.key()


def test_code_documentation_and_variables_shown_once_examples_each():
    state = _state()
    request = OptoPrime({"examples_per_step": 2}).build_request(
        state, state.best.results[:2], base=state.best
    )
    user = request.messages[1].content
    assert user.count("#Code") == 1 and user.count("#Variables") == 1
    assert user.count("#Inputs") == 2 and user.count("#Feedback") == 2
    assert "tidy4 = tidy(answer=extract2)" in user
    assert "expected 'paris', got 'Paris!'" in user
    assert "def tidy(answer):" in user


def test_synthetic_view_without_traces():
    state = _state(traced=False)
    request = OptoPrime().build_request(state, state.best.results[:1], base=state.best)
    user = request.messages[1].content
    assert "output = program(question=question, instruction=instruction, tidy.code=tidy.code)" in (
        user
    )
    assert 'question = "What is the capital of France?"' in user
    assert 'output = "Paris!"' in user and "wrong" in user


def test_a_prompt_programs_synthetic_view_documents_what_the_model_reads():
    state = dataclasses.replace(
        _state(traced=False),
        program_description=f"Classify the review. ({PROMPT_SHAPE})",
    )
    user = OptoPrime().build_request(state, state.best.results[:1], base=state.best)
    content = user.messages[1].content
    # its one step is the model's call, named so: as `program(...)`, a small optimizer model
    # reasoned about code that "should analyze the tone", not about the instructions
    assert "output = language_model(question=question, instruction=instruction" in content
    documentation = content.split("#Documentation\n")[1].split("\n\n")[0]
    assert documentation.startswith("language_model: it reads `system` as its instructions")
    # a workflow's synthetic view has no documentation to give
    plain = _state(traced=False)
    user = OptoPrime().build_request(plain, plain.best.results[:1], base=plain.best)
    assert "#Documentation\n(none)\n" in user.messages[1].content


def test_the_mistakes_line_names_the_program_and_the_text_to_change():
    # "the current text" of other optimizers' prompts: on SST-2 (input field `text`) a small
    # model read it as the review and wrote the seed back
    state = dataclasses.replace(_state(traced=False), choices=("paris", "rome", "tokyo"))
    user = OptoPrime().build_request(state, state.best.results[:1], base=state.best)
    constraints = user.messages[1].content.split("#Constraints\n")[1]
    assert f"inputs the program got {len(QUESTIONS)} wrong" in constraints
    assert "Say in the new `instruction` how to tell these answers apart." in constraints
    assert "current text" not in constraints


def test_the_schema_holds_an_exemplars_output_to_the_choices():
    state = dataclasses.replace(
        _state(traced=False),
        trainable=("instruction", "exemplars"),
        kinds={"instruction": "text", "exemplars": "exemplars"},
        choices=("paris", "rome"),
    )
    request = OptoPrime().build_request(state, state.best.results[:1], base=state.best)
    schema = json.loads(request.json_schema)
    exemplar = schema["properties"]["suggestion"]["properties"]["exemplars"]["items"]
    assert exemplar["properties"]["output"] == {"type": "string", "enum": ["paris", "rome"]}


def test_long_values_are_clipped_to_fit():
    state = _state(traced=False)
    long = Example("long", {"question": "why? " * 2000}, "x")
    results = (ExampleResult(long, "y " * 3000, Score(0.0, feedback="f " * 1000)),) * 2
    request = OptoPrime().build_request(state, results, base=state.best)
    assert sum(len(m.content) for m in request.messages) <= 5000
    assert "more chars]" in request.messages[1].content


def test_history_lists_earlier_optoprime_changes():
    state = _state()
    seed = state.best
    child = Candidate({**seed.candidate.params, "instruction": "Name the capital."})
    state.history.append(
        Evaluated(child, "val", seed.results[:1], parent_id=seed.candidate.id, origin="optoprime")
    )
    request = OptoPrime().build_request(state, seed.results[:1], base=state.best)
    user = request.messages[1].content
    assert "#History" in user
    assert (
        '1. changed instruction = "Name the capital." -> validation score 0.000 (before: 0.000)'
        in user
    )


# -- replies -----------------------------------------------------------------------------


async def test_good_reply_gives_the_full_candidate():
    state = _state()
    llm = scripted_llm(GOOD)
    optimizer = OptoPrime()
    proposals = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    assert len(proposals) == 1
    proposal = proposals[0]
    assert proposal.params == {"instruction": instruction.peek(), "tidy.code": NEW_CODE}
    assert proposal.parent_id == state.seed.id
    assert proposal.meta == {"kind": "optoprime", "updated": ["tidy.code"], "repaired": False}
    assert optimizer.stats["replies"] == 1 and optimizer.stats["accepted"] == 1
    assert proposal.request_key == llm.key(_requests(llm)[0])  # the engine records the link
    assert optimizer.stats["calls"] == 1 and optimizer.stats["proposals"] == 1
    request = _requests(llm)[0]
    assert request.temperature == 0.0 and request.max_tokens == 600
    assert request.tag == "optimizer"


async def test_bad_json_then_a_good_repair():
    state = _state()
    llm = scripted_llm("Sure, I would change the tidy function to lower-case.", GOOD)
    optimizer = OptoPrime()
    [proposal] = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    assert proposal.meta["repaired"] is True
    assert proposal.request_key == llm.key(_requests(llm)[1])  # read from the repair's reply
    assert optimizer.stats["unparseable"] == 1 and optimizer.stats["repaired"] == 1
    first, repair = _requests(llm)
    assert repair.messages[: len(first.messages)] == first.messages
    assert repair.messages[-2].role == "assistant"
    assert repair.messages[-2].content.startswith("Sure, I would")
    assert "no JSON object" in repair.messages[-1].content
    assert "'instruction', 'tidy.code'" in repair.messages[-1].content
    # sampled, with a seed: at temperature 0 the model tends to repeat its unusable reply
    assert first.temperature == 0.0 and first.seed is None
    assert repair.temperature == 0.7 and repair.seed is not None


async def test_a_long_bad_reply_is_clipped_in_the_repair_call():
    llm = scripted_llm("word " * 1000, GOOD)
    [proposal] = await OptoPrime().propose(_state(), llm=llm, rng=random.Random(0))
    shown = _requests(llm)[1].messages[-2].content
    assert len(shown) < 900 and shown.endswith("[4200 more chars]")


async def test_two_bad_replies_spend_one_step_and_a_later_step_works():
    state = _state()
    llm = scripted_llm("not json", "{still not json", GOOD)
    optimizer = OptoPrime({"steps": 3})
    [proposal] = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    assert proposal.meta["repaired"] is False
    assert optimizer.stats["failed_steps"] == 1 and optimizer.stats["unparseable"] == 2
    assert optimizer._steps_used == 2
    first, _, third = _requests(llm)
    assert first.messages[1].content != third.messages[1].content  # other examples shown


async def test_rejected_values_are_counted():
    state = _state()
    bad = json.dumps(
        {"suggestion": {"nope": "x", "tidy.code": "def tidy(answer) return answer",
                        "#Instruction": instruction.peek()}}
    )  # fmt: skip
    wrong_function = json.dumps({"suggestion": {"tidy.code": "def clean(answer):\n    pass\n"}})
    llm = scripted_llm(bad, wrong_function, GOOD)
    optimizer = OptoPrime()
    [proposal] = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    # the unchanged instruction is no rejection (nor, beside refused values, a no-op)
    assert optimizer.stats["rejected"] == 3 and optimizer.stats["noops"] == 0
    assert optimizer.stats["failed_steps"] == 1
    repair = _requests(llm)[1].messages[-1].content
    assert "'nope' is not a variable" in repair
    assert "'tidy.code' does not compile" in repair
    assert "'instruction' is unchanged" in repair
    assert proposal.params["tidy.code"] == NEW_CODE


async def test_names_match_tolerantly_and_exemplars_are_checked():
    state = _state()
    state.trainable = ("instruction", "tidy.code", "shots")
    state.kinds["shots"] = "exemplars"
    shots = json.dumps([{"inputs": {"question": "Capital of Peru?"}, "output": "lima"}])
    reply = json.dumps(
        {"suggestion": {"$Instruction": "Name the capital, lower-case.", "#tidy": NEW_CODE,
                        "shots": shots}}
    )  # fmt: skip
    optimizer = OptoPrime()
    [proposal] = await optimizer.propose(state, llm=scripted_llm(reply), rng=random.Random(0))
    assert proposal.meta["updated"] == ["instruction", "tidy.code", "shots"]
    assert proposal.params["shots"] == [
        {"inputs": {"question": "Capital of Peru?"}, "output": "lima"}
    ]
    assert proposal.params["instruction"] == "Name the capital, lower-case."


async def test_suggestion_at_the_top_level_is_accepted():
    state = _state()
    code = NEW_CODE.replace("'", '"')
    reply = "```json\n{'tidy.code': '" + code.replace("\n", "\\n") + "',}\n```"
    [proposal] = await OptoPrime().propose(state, llm=scripted_llm(reply), rng=random.Random(0))
    assert proposal.params["tidy.code"] == code


async def test_a_candidate_already_tried_is_not_proposed_again():
    state = _state()
    state.history.append(
        Evaluated(Candidate({**state.seed.params, "tidy.code": NEW_CODE}), "val", ())
    )
    other = json.dumps({"suggestion": {"instruction": "Name the capital city."}})
    llm = scripted_llm(GOOD, other)
    optimizer = OptoPrime()
    [proposal] = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    assert optimizer.stats["noops"] == 1 and proposal.meta["repaired"] is True
    repair = _requests(llm)[1]
    assert "already tried" in repair.messages[-1].content
    assert repair.messages[-2].content == GOOD  # changed: the reply and the note follow


async def test_the_current_values_unchanged_are_a_counted_noop_that_changes_the_next_request():
    state = _state()
    current = state.best.candidate.params["instruction"]
    unchanged = json.dumps({"reasoning": "fine as it is", "answer": "",
                            "suggestion": {"instruction": current}})  # fmt: skip
    llm = scripted_llm(unchanged, unchanged, GOOD)
    optimizer = OptoPrime({"steps": 2})
    [proposal] = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    first, repair, second_step = _requests(llm)
    assert optimizer.stats["noops"] == 2 and optimizer.stats["failed_steps"] == 1
    assert "current value unchanged" in repair.messages[-1].content
    assert repair.messages[:2] == first.messages and len(repair.messages) == 4
    # the step after a no-op is not the same request again: other examples, sampled
    assert second_step.messages != first.messages
    assert (first.temperature, second_step.temperature) == (0.0, 0.7)
    assert second_step.seed is not None
    assert proposal.params["tidy.code"] == NEW_CODE


def test_meta_prompt_shows_the_reply_shape_not_a_sample_reply():
    state = _state()
    request = OptoPrime().build_request(state, state.best.results[:1], base=state.best)
    system = request.messages[0].content
    for key in ('"reasoning"', '"answer"', '"suggestion"'):
        assert key in system
    assert "{" not in system and "Example of a reply" not in system
    repair = template_parts("optoprime")["repair"].template
    assert "{" not in repair


async def test_steps_run_out_without_raising():
    state = _state()
    llm = scripted_llm(*(["no"] * 4))
    optimizer = OptoPrime({"steps": 2})
    assert await optimizer.propose(state, llm=llm, rng=random.Random(0)) == []
    assert optimizer.stats["failed_steps"] == 2 and optimizer.stats["calls"] == 4
    assert await optimizer.propose(state, llm=llm, rng=random.Random(0)) == []  # no more calls


async def test_the_same_prompt_twice_is_sampled_the_second_time():
    state = _state()
    only = state.best.results[:1]
    state.history[0] = Evaluated(state.seed, "val", only)
    llm = scripted_llm("no", "still no", GOOD)
    optimizer = OptoPrime({"steps": 2})
    [proposal] = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    first, repair, again = _requests(llm)
    assert again.messages == first.messages
    assert (first.temperature, first.seed) == (0.0, None)
    assert again.temperature == 0.7 and again.seed == 2
    assert optimizer.stats["resampled"] == 2  # the repair call, and the same prompt again
    assert repair.temperature == 0.7 and repair.seed == 1


def test_prompt_templates_keep_their_placeholders_in_the_constraints():
    state = _state(traced=False)
    state.seed = Candidate({**state.seed.params, "instruction": "Q: {question}\nA:"})
    state.history[0] = Evaluated(state.seed, "val", state.history[0].results)
    request = OptoPrime().build_request(state, state.best.results[:1], base=state.best)
    assert "instruction: a non-empty text keeping the placeholders {question}" in (
        request.messages[1].content
    )


async def test_a_prompt_too_long_for_the_model_spends_the_step():
    state = _state()
    llm = scripted_llm(BadRequestError("prompt exceeds the context window"), GOOD)
    optimizer = OptoPrime()
    [proposal] = await optimizer.propose(state, llm=llm, rng=random.Random(0))
    assert optimizer.stats["request_errors"] == 1 and optimizer.stats["failed_steps"] == 1
    assert _requests(llm)[1].messages[1].content.count("#Inputs") == 1
    assert proposal.meta["updated"] == ["tidy.code"]


async def test_all_examples_pass_shows_the_weakest():
    state = _state()
    perfect = tuple(
        ExampleResult(r.example, r.output, Score(1.0), None, r.trace) for r in state.best.results
    )
    state.history[0] = Evaluated(state.seed, "val", perfect)
    llm = scripted_llm(GOOD)
    [proposal] = await OptoPrime().propose(state, llm=llm, rng=random.Random(0))
    assert _requests(llm)[0].messages[1].content.count("#Inputs") == 2


def test_config_registry_and_estimate():
    assert get("optoprime") is OptoPrime
    with pytest.raises(ValueError, match="extra"):
        OptoPrimeConfig(stepz=3)
    optimizer = OptoPrime({"steps": 5})
    assert optimizer.config.steps == 5
    assert optimizer.estimate_calls(n_train=10, n_val=20) == 100
    assert OptoPrime().config == OptoPrimeConfig()


# -- the real model ----------------------------------------------------------------------


@pytest.mark.real
def test_real_smollm2_propose_does_not_raise(tmp_path):
    from promptopt.llm.models import make_llm

    state = _state()
    llm = make_llm("local:smollm2")
    optimizer = OptoPrime({"steps": 2, "max_tokens": 200})
    try:
        proposals = asyncio.run(optimizer.propose(state, llm=llm, rng=random.Random(0)))
    finally:
        llm.close()
    stats = optimizer.stats
    assert stats["replies"] >= 1 and stats["calls"] <= 4
    assert len(proposals) <= 1
    assert stats["proposals"] + stats["failed_steps"] >= 1
    print("SmolLM2 optoprime stats:", stats)

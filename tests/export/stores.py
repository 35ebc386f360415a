"""Small hand-built run stores whose preference pairs are worked out by hand in the tests.

- :func:`reviews_runs`: two runs of a prompt task; candidate ``c3`` is a calibration
  variant of ``c2`` (the same requests, other answers);
- :func:`triage_runs`: traced workflow runs (LLM nodes ``topic`` and ``classify``,
  code node ``route``); one trace in a second run sampled the topic differently;
- :func:`optimizer_run`: two optimizer replies to one meta-prompt and one to another;
- :func:`judged_run`: pairwise judge comparisons (SPO's votes) on two inputs: a 3-1
  win, a 2-2 tie, a 4-0 win, a 2-1 split with an unreadable vote, an incumbent's 3-0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptopt.graph import Trace
from promptopt.llm.client import CallEvent
from promptopt.llm.types import LLMRequest, LLMResponse, Message
from promptopt.optimizers.base import Verdict, Vote
from promptopt.store import RunStore

GOOD, BAD = {"text": "good"}, {"text": "bad"}
MESSAGE = {"message": "refund please"}
TOPIC = (("system", "What is it about?"), ("user", "refund please"))
META_1 = (("system", "You improve programs."), ("user", "Fix instruction; errors: 1"))
META_2 = (("system", "You improve programs."), ("user", "Fix instruction; errors: 2"))


def call(
    store: RunStore,
    messages: tuple[tuple[str, str], ...],
    text: str,
    *,
    temperature: float = 0.0,
    tag: str = "task",
    model: str = "fake:small",
) -> str:
    """Record one answered request; returns its key."""
    request = LLMRequest(
        messages=tuple(Message(r, c) for r, c in messages), temperature=temperature, tag=tag
    )
    key = request.key(namespace=model)
    provider, name = model.split(":", 1)
    response = LLMResponse(text=text)
    store.record_llm_call(
        CallEvent(key, provider, name, request, response, None, False, 1, 0.0, 0.0)
    )
    return key


def prompt(system: str, inputs: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return (("system", system), ("user", inputs["text"]))


def evaluate(store: RunStore, candidate: str, inputs: dict[str, Any], output: str,
             score: float, key: str | None, *, example: str = "") -> None:  # fmt: skip
    store.add_evaluation(candidate_id=candidate, split="val", example_id=example or inputs_id(inputs),
                         inputs=inputs, target="", output=output, score=score, valid=True,
                         request_key=key)  # fmt: skip


def inputs_id(inputs: dict[str, Any]) -> str:
    return "-".join(str(v).replace(" ", "_") for v in inputs.values())


def reviews_runs(root: Path, *, second: bool = True) -> list[str]:
    """``r1``: c1 (system S1), c2 (S2) and c3 (c2's requests, calibrated) on GOOD and BAD;
    ``r2``: c2 again (a duplicate of r1's) and c9 (S9) on GOOD."""
    with RunStore.create(root, task={"name": "reviews"}, run_id="r1") as store:
        answers = {"c1": ("S1", "positive", "positive"), "c2": ("S2", "negative", "negative"),
                   "c3": ("S2", "positive", "positive")}  # fmt: skip
        for candidate, (system, on_good, on_bad) in answers.items():
            store.add_candidate(candidate, {"system": candidate}, parent_id=None, step=0,
                                origin="seed")  # fmt: skip
            for inputs, output, right in ((GOOD, on_good, "positive"), (BAD, on_bad, "negative")):
                key = call(
                    store, prompt(system, inputs), "positive" if system == "S1" else "negative"
                )
                evaluate(store, candidate, inputs, output, float(output == right), key)
    if not second:
        return ["r1"]
    with RunStore.create(root, task={"name": "reviews"}, run_id="r2") as store:
        for candidate, system, output in (("c2", "S2", "negative"), ("c9", "S9", "negative")):
            store.add_candidate(candidate, {"system": candidate}, parent_id=None, step=0,
                                origin="seed")  # fmt: skip
            key = call(store, prompt(system, GOOD), output)
            evaluate(store, candidate, GOOD, output, 0.0, key)
    return ["r1", "r2"]


def _trace(trace_id: str, steps: list[tuple[str, str, str]]) -> Trace:
    """A stored-shape trace: one op node per (node, key, reply), then ``route``."""
    nodes = [{"index": i, "kind": "op", "name": name, "parents": [i - 1] if i else [],
              "llm_calls": [{"key": key, "text": text, "error": None}]}
             for i, (name, key, text) in enumerate(steps)]  # fmt: skip
    nodes.append({"index": len(steps), "kind": "op", "name": "route", "parents": [len(steps) - 1]})
    return Trace.from_dict({"id": trace_id, "name": "triage", "nodes": nodes, "feedback": []})


def triage_runs(root: Path) -> dict[str, str]:
    """``r3``: traces t1 (score 1), t2 (0: classify answered otherwise), t3 (0: only the
    code differed); ``r4``: t4 (0: the topic, sampled, answered otherwise). Returns keys."""
    keys: dict[str, str] = {}
    with RunStore.create(root, task={"name": "triage"}, run_id="r3") as store:
        keys["topic"] = call(store, TOPIC, "payment")
        keys["c1"] = call(store, (("system", "I1"), ("user", "refund please")), "billing")
        keys["c2"] = call(store, (("system", "I2"), ("user", "refund please")), "technical")
        for candidate, trace_id, classify, score in (("d1", "t1", "c1", 1.0),
                                                     ("d2", "t2", "c2", 0.0),
                                                     ("d3", "t3", "c1", 0.0)):  # fmt: skip
            store.add_candidate(candidate, {"n": candidate}, parent_id=None, step=0, origin="seed")
            evaluate(store, candidate, MESSAGE, "x", score, None, example="m1")
            steps = [("topic", keys["topic"], "payment"), ("classify", keys[classify], "?")]
            store.add_trace(_trace(trace_id, steps), candidate_id=candidate, split="val",
                            example_id="m1")  # fmt: skip
    with RunStore.create(root, task={"name": "triage"}, run_id="r4") as store:
        keys["topic4"] = call(store, TOPIC, "bug", temperature=0.8)
        keys["c4"] = call(store, (("system", "I1"), ("user", "refund please (bug)")), "technical")
        store.add_candidate("d4", {"n": "d4"}, parent_id=None, step=0, origin="seed")
        evaluate(store, "d4", MESSAGE, "x", 0.0, None, example="m1")
        steps = [("topic", keys["topic4"], "bug"), ("classify", keys["c4"], "technical")]
        store.add_trace(_trace("t4", steps), candidate_id="d4", split="val", example_id="m1")
    return keys


def optimizer_run(root: Path) -> None:
    """``r5``: e1 (val 0.75) and e2 (0.25) from two replies to META_1; e3 from META_2."""
    with RunStore.create(root, task={"name": "reviews"}, run_id="r5") as store:
        store.add_candidate("e0", {"p": "seed"}, parent_id=None, step=0, origin="seed")
        for candidate, meta, reply, temperature, scores in (
            ("e1", META_1, '{"suggestion": {"p": "one"}}', 0.0, (1.0, 0.5)),
            ("e2", META_1, '{"suggestion": {"p": "two"}}', 0.7, (0.5, 0.0)),
            ("e3", META_2, '{"suggestion": {"p": "three"}}', 0.0, (1.0, 1.0)),
        ):
            key = call(store, meta, reply, temperature=temperature, tag="optimizer")
            store.add_candidate(candidate, {"p": candidate}, parent_id="e0", step=1,
                                origin="optoprime")  # fmt: skip
            store.add_proposal(candidate_id=candidate, call_key=key, step=1)
            for n, score in enumerate(scores):
                evaluate(store, candidate, {"text": f"x{n}"}, "y", score, None)


Q1, Q2 = {"question": "q1"}, {"question": "q2"}
# each candidate's answers to Q1 and Q2 (None: that example failed); c repeats a's Q2 answer
JUDGED_ANSWERS = {"s": ("s1", "s2"), "a": ("a1", "a2"), "b": ("b1", "b2"), "c": ("c1", "a2"),
                  "d": ("d1", "d2"), "e": ("e1", None)}  # fmt: skip
# (incumbent, challenger, choices): never swapped, so B is the challenger's; "-" unreadable
COMPARISONS = (("s", "a", "BBBA"), ("a", "b", "ABAB"), ("a", "c", "BBBB"), ("c", "d", "AAB-"),
               ("c", "e", "AA-A"))  # fmt: skip


def judged_run(root: Path, *, run_id: str = "r6", only: tuple[str, ...] = ()) -> None:
    """``run_id``: candidates answering Q1 and Q2 with system ``S<name>``, judged as in
    ``COMPARISONS`` (``only``: just the comparisons whose challenger is named, on Q1)."""
    comparisons = [c for c in COMPARISONS if not only or c[1] in only]
    names = sorted({name for c in comparisons for name in c[:2]})
    with RunStore.create(root, task={"name": "notes"}, run_id=run_id) as store:
        for name in names:
            store.add_candidate(name, {"system": f"S{name}"}, parent_id=None, step=0,
                                origin="seed")  # fmt: skip
            shown = (Q1,) if only else (Q1, Q2)
            for inputs, answer in zip(shown, JUDGED_ANSWERS[name][: len(shown)], strict=True):
                messages = (("system", f"S{name}"), ("user", inputs["question"]))
                key = None if answer is None else call(store, messages, answer, model="fake:notes")
                store.add_evaluation(candidate_id=name, split="val", example_id=inputs_id(inputs),
                                     inputs=inputs, target="", output=answer, score=0.5,
                                     valid=answer is not None, request_key=key,
                                     error=None if answer else "the model failed")  # fmt: skip
        for step, (incumbent, challenger, choices) in enumerate(comparisons, 1):
            votes = tuple(Vote(i, False, "" if c == "-" else c) for i, c in enumerate(choices))
            store.add_votes(Verdict(incumbent, challenger, votes), step=step)

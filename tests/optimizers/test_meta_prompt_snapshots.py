"""The meta-prompts SPO and PROMST render, as snapshots (``snapshots/*.txt``)."""

from __future__ import annotations

from snapshot import check_snapshot
from test_promst import _evaluated as promst_evaluated
from test_spo import CHALLENGER, INCUMBENT, _state

from promptopt.llm.types import LLMRequest
from promptopt.optimizers.promst import PROMST
from promptopt.optimizers.spo import SPO


def _render(request: LLMRequest) -> str:
    head = f"temperature={request.temperature} seed={request.seed} choices={list(request.choices)}"
    return head + "\n" + "".join(f"==== {m.role} ====\n{m.content}\n" for m in request.messages)


def test_spo_rewrite_and_judge_requests():
    spo = SPO({"requirements": "Short, correct answers."})
    state = _state(INCUMBENT)
    rewrite = spo.rewrite_request(state, INCUMBENT, "system", problem="")
    retry = spo.rewrite_request(state, INCUMBENT, "system", problem="suggested a prompt that was already tried.")  # fmt: skip
    pairs = list(zip(INCUMBENT.results, CHALLENGER.results, strict=True))
    judge = spo.judge_request(state, pairs, swapped=True, vote=0)
    text = "\n".join(_render(r) for r in (rewrite, retry, judge))
    check_snapshot("spo_meta_prompts.txt", text)
    assert "Answer the question, new prompt." not in _render(judge)


def test_promst_summary_and_write_requests():
    parent = promst_evaluated("Say yes.", ["format", "loop", 0.0, 1.0, "format"])
    promst = PROMST()
    summary = promst.summary_request(
        parent, "system", "format", "Answer yes or no.", parent.results[::4]
    )
    errors = [("format", 2, "It never says which words are allowed."), ("other", 1, "Unclear.")]
    write = promst.write_request("system", parent, errors, "1. score 0.200: Say yes.")
    check_snapshot("promst_meta_prompts.txt", "\n".join(_render(r) for r in (summary, write)))


def test_promst_shows_the_confusions_after_the_error_summaries():
    parent = promst_evaluated("Say yes.", ["format", "loop", 0.0, 1.0, "format"])
    errors = [("format", 1, "It never says which words are allowed.")]
    confused = "On 3 scored inputs the prompt got 2 wrong."
    write = _render(PROMST().write_request("system", parent, errors, "1. Say yes.",
                                           confused=confused))  # fmt: skip
    assert "allowed.\n\nOn 3 scored inputs the prompt got 2 wrong.\n\n#Trajectory" in write

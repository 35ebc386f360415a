"""One rule for a failed example (``ExampleResult.failed``): an unreadable output fails even
when its score value is full, for the examples OptoPrime and MCTS show as failing."""

from __future__ import annotations

import random

from promptopt.errors import BadRequestError
from promptopt.llm.fakes import scripted_llm
from promptopt.optimizers.base import Candidate, Evaluated, ExampleResult, SearchState
from promptopt.optimizers.mcts import MCTS
from promptopt.optimizers.mcts_tree import Node
from promptopt.optimizers.optoprime import OptoPrime
from promptopt.task.data import Example
from promptopt.task.metrics import Score

EXAMPLES = (Example("good", {"text": "a"}, "A"), Example("unreadable", {"text": "b"}, "B"))
RESULTS = (
    ExampleResult(EXAMPLES[0], "A", Score(1.0)),
    ExampleResult(EXAMPLES[1], "B?!", Score(1.0, valid=False, feedback="no answer found")),
)


async def _never(params, examples):  # pragma: no cover - not probed here
    raise AssertionError("not probed")


def _state() -> SearchState:
    seed = Candidate({"system": "Answer."})
    return SearchState(
        seed=seed, trainable=("system",), train=EXAMPLES, val=EXAMPLES,
        program_description="Upper-case the letter.", evaluate=_never,
        history=[Evaluated(seed, "val", RESULTS)], kinds={"system": "text"},
    )  # fmt: skip


def test_an_invalid_score_fails_even_at_full_value():
    assert [r.failed for r in RESULTS] == [False, True]


def test_optoprime_picks_the_invalid_example_as_failing():
    state = _state()
    picked = OptoPrime()._pick(state.best, random.Random(0), set())
    assert [r.example.id for r in picked] == ["unreadable"]


async def test_mcts_shows_the_invalid_example_as_an_error():
    state = _state()
    llm = scripted_llm(BadRequestError("too long"))  # the feedback request is all we read
    node = Node(id=0, parent=None, depth=0, candidate=state.seed.id, params=state.seed.params,
                reward=0.5)  # fmt: skip
    await MCTS()._branch(state, llm, node, "system", RESULTS, set(), random.Random(0))
    [request] = llm.backend.requests
    shown = request.messages[-1].content
    assert "the program's output is wrong" in shown
    assert "B?!" in shown and "text: a" not in shown

"""Calibration: per-label offsets on scored choices fix a model's lean, at no model call."""

from __future__ import annotations

from collections.abc import Sequence

from fake_sentiment import WORDS

from promptopt.api import aoptimize
from promptopt.llm.backends.vllm import VLLMBackend
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest, LLMResponse
from promptopt.testing.vllm_engine import FakeVLLM, Script


def lean(text: str) -> dict[str, float]:
    """Choice scores of a small model: it reads the words, but leans hard to 'positive'."""
    negative = any(w in text for w in WORDS["negative"])
    return {"positive": -1.0, "negative": -1.5 if negative else -2.5}


def leaning_model(request: LLMRequest) -> LLMResponse:
    scores = lean(request.messages[-1].content)
    ranked = tuple(scores[c] for c in request.choices)
    best = request.choices[max(range(len(ranked)), key=ranked.__getitem__)]
    return LLMResponse(text=best, choice_logprobs=ranked)


async def test_calibration_corrects_the_lean_without_model_calls(task_file):
    backend = FakeBackend(leaning_model)
    result = await aoptimize(task_file(), backends={"task": backend})
    # uncalibrated it always answers "positive"; an offset between -0.5 and -1.5 fixes that
    assert result.scores["seed_test"] < result.scores["best_test"] == 1.0
    assert result.scores["best_val"] == 1.0
    (offset,) = result.best.params["calibration"].values()
    assert -1.5 <= offset < -0.5
    # the seed, the two selectors' sets and six random/mutated sets on 20 validation rows:
    # calibration asked the model nothing
    assert len(backend.requests) == result.usage["calls"] + result.test_usage["calls"]
    assert result.usage["calls"] <= 20 * 9
    assert "# calibration" in result.best_prompt_path.read_text()


def leaning_tokens(context: Sequence[str], token: str) -> float:
    """The same lean, as the log-probability of a label's one token after a chat prompt."""
    last_user = "".join(context).rsplit("<|im_start|>user", 1)[-1]
    return lean(last_user).get(token, -0.5)


async def test_calibration_on_vllm_changes_scores_exactly_as_on_scored_choices(task_file):
    fake = FakeVLLM(script=Script(logprob=leaning_tokens))
    on_vllm = await aoptimize(task_file(), backends={"task": VLLMBackend(model="m", api=fake)})
    reference = await aoptimize(task_file(), backends={"task": FakeBackend(leaning_model)})
    assert on_vllm.best.params["calibration"] == reference.best.params["calibration"]
    assert on_vllm.scores == reference.scores
    assert on_vllm.scores["seed_test"] < on_vllm.scores["best_test"] == 1.0

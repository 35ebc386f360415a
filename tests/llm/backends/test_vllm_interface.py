"""The fake vLLM mirrors the real one: method names, arguments, output objects and fields.

vLLM needs a CUDA GPU, so on the machines promptopt is built on it cannot be
imported and these tests are skipped, saying so; wherever it is importable they
hold :mod:`promptopt.testing.vllm_engine` to the installed release.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from promptopt.testing import vllm_engine as fake

vllm = pytest.importorskip(
    "vllm",
    reason="vLLM is not importable here (it needs a CUDA GPU): the fake engine's signatures "
    "are compared with vLLM's only where it is installed",
)
from promptopt.llm.backends.vllm import load_api  # noqa: E402

REAL = load_api()


def params(fn: Any) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def fields(cls: Any) -> dict[str, Any]:
    """Field name -> default (``inspect.Parameter.empty`` where required)."""
    names = getattr(cls, "__struct_fields__", None)
    if names is not None:
        defaults = getattr(cls, "__struct_defaults__", ())
        required = len(names) - len(defaults)
        return {n: (inspect.Parameter.empty if i < required else defaults[i - required])
                for i, n in enumerate(names)}  # fmt: skip
    if dataclasses.is_dataclass(cls):
        return {f.name: (f.default if f.default is not dataclasses.MISSING
                         else inspect.Parameter.empty) for f in dataclasses.fields(cls)}  # fmt: skip
    return {p.name: p.default for p in params(cls)}


def same_call(fake_fn: Any, real_fn: Any) -> None:
    """Every argument the fake takes, the real one takes, of the same kind and in order."""
    real = {p.name: p for p in params(real_fn)}
    positional = [p.name for p in params(fake_fn) if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == [p.name for p in params(real_fn)][: len(positional)]
    for p in params(fake_fn):
        if p.kind is p.VAR_KEYWORD:
            continue
        assert p.name in real, f"{real_fn.__qualname__} takes no {p.name!r}"
        assert p.kind == real[p.name].kind or p.kind is p.KEYWORD_ONLY, p.name


def test_the_engine_methods() -> None:
    real, mock = REAL.AsyncLLM, fake.FakeAsyncLLM
    for name in ("generate", "abort", "shutdown", "from_engine_args", "get_tokenizer"):
        same_call(getattr(mock, name), getattr(real, name))
    assert inspect.isasyncgenfunction(real.generate) and inspect.iscoroutinefunction(real.abort)


def test_the_output_objects() -> None:
    same_call(fake.RequestOutput.__init__, vllm.RequestOutput.__init__)
    outputs = importlib_outputs()
    for mock, real in ((fake.CompletionOutput, outputs.CompletionOutput),
                       (fake.Logprob, importlib_logprob())):  # fmt: skip
        mine, theirs = fields(mock), fields(real)
        assert set(mine) <= set(theirs), set(mine) - set(theirs)
        required = [n for n, d in theirs.items() if d is inspect.Parameter.empty]
        assert [n for n, d in mine.items() if d is inspect.Parameter.empty] == required


def test_the_parameter_classes() -> None:
    for mock, real in (
        (fake.SamplingParams, REAL.SamplingParams),
        (fake.StructuredOutputsParams, REAL.StructuredOutputsParams),
        (fake.AsyncEngineArgs, REAL.AsyncEngineArgs),
    ):
        mine, theirs = fields(mock), fields(real)
        assert set(mine) <= set(theirs), f"{real.__name__} lacks {set(mine) - set(theirs)}"
    sampling = fields(REAL.SamplingParams)
    for name, default in fields(fake.SamplingParams).items():
        real_default = sampling[name]
        assert getattr(default, "name", default) == getattr(real_default, "name", real_default)
    if "prompt_logprob_start" in sampling:
        assert set(fields(fake.ScoringSamplingParams)) <= set(sampling)
    assert [k.name for k in fake.RequestOutputKind] == [k.name for k in REAL.RequestOutputKind]
    with pytest.raises(ValueError, match="greedy"):
        REAL.SamplingParams(temperature=0.0, n=3)  # what the backend works around


def importlib_outputs() -> Any:
    import vllm.outputs

    return vllm.outputs


def importlib_logprob() -> Any:
    try:
        from vllm.logprobs import Logprob
    except ImportError:  # older layouts
        from vllm.sequence import Logprob
    return Logprob

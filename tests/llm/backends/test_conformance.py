"""Every built-in backend passes the conformance kit that plugin authors run on theirs."""

from __future__ import annotations

import pytest

from promptopt.llm.backends.anthropic import AnthropicBackend
from promptopt.llm.backends.local import LocalBackend
from promptopt.llm.backends.openai import OpenAIBackend
from promptopt.llm.backends.vllm import VLLMBackend
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.types import LLMRequest, LLMResponse
from promptopt.testing import check_backend
from promptopt.testing.anthropic_server import AnthropicTestServer
from promptopt.testing.openai_server import OpenAITestServer
from promptopt.testing.vllm_engine import FakeVLLM


def test_the_fakes() -> None:
    check_backend(FakeBackend)


def test_openai_against_its_loopback_server() -> None:
    with OpenAITestServer() as server:
        check_backend(OpenAIBackend, options={"base_url": server.base_url, "timeout": 10})


def test_anthropic_against_its_loopback_server() -> None:
    with AnthropicTestServer() as server:
        check_backend(AnthropicBackend, options={"base_url": server.base_url, "timeout": 10})


def test_vllm_on_the_fake_async_engine() -> None:
    check_backend(VLLMBackend, model="org/model", options={"api": FakeVLLM()})


@pytest.mark.real
def test_local_on_the_real_smollm2() -> None:
    check_backend(LocalBackend, model="smollm2", options={"n_ctx": 512})


class _IgnoresN(FakeBackend):
    """A backend that answers one sample whatever ``n`` asks for."""

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        return LLMResponse(text="yes", model=self.model)


class _SyncClose(FakeBackend):
    def aclose(self) -> None:  # type: ignore[override]
        return None


def test_the_kit_names_what_a_broken_backend_breaks() -> None:
    with pytest.raises(AssertionError, match="texts must hold the 2 answer"):
        check_backend(_IgnoresN)
    with pytest.raises(AssertionError, match="aclose must be an async method"):
        check_backend(_SyncClose)
    with pytest.raises(AssertionError, match="provider must be a str"):
        check_backend(type("NoProvider", (), {}))

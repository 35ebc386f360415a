"""Model strings, ModelConfig, and building backends and clients from them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from promptopt import plugins
from promptopt.errors import BackendUnavailableError, ConfigError
from promptopt.llm import LLM, FakeBackend, LLMRequest, Message, ResponseCache
from promptopt.llm.backends.vllm import VLLMBackend
from promptopt.llm.models import (
    ModelConfig,
    ModelRef,
    make_backend,
    make_llm,
    parse_model,
    providers,
)

BUILT_IN = {
    "openai": "promptopt.llm.backends.openai:OpenAIBackend",
    "anthropic": "promptopt.llm.backends.anthropic:AnthropicBackend",
    "local": "promptopt.llm.backends.local:LocalBackend",
    "vllm": "promptopt.llm.backends.vllm:VLLMBackend",
    "fake": "promptopt.llm.fakes:FakeBackend",
}


def registered(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    """Providers as if these entry points were installed (over the built-in ones)."""
    table = {**plugins.providers.targets(), **targets}
    monkeypatch.setattr(plugins.providers, "targets", lambda: table)


@pytest.mark.parametrize(
    ("text", "provider", "name"),
    [
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("anthropic:claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest"),
        ("openai:llama3:8b", "openai", "llama3:8b"),
        ("local:smollm2", "local", "smollm2"),
        ("vllm:Qwen/Qwen2.5-0.5B-Instruct", "vllm", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("fake:echo", "fake", "echo"),
        ("  OpenAI:gpt-4o ", "openai", "gpt-4o"),
        (None, "local", "smollm2"),
        ("", "local", "smollm2"),
    ],
)
def test_parse_model_table(text: str | None, provider: str, name: str) -> None:
    assert parse_model(text) == ModelRef(provider, name)


def test_model_ref_prints_as_model_string() -> None:
    assert str(parse_model("openai:llama3:8b")) == "openai:llama3:8b"


def test_no_colon_suggests_a_provider() -> None:
    with pytest.raises(ConfigError, match=r"'openai:gpt-4o'"):
        parse_model("gpt-4o")


def test_unknown_provider_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_model("mistral:large")
    message = str(info.value)
    assert "'mistral'" in message
    for provider in providers():
        assert provider in message


def test_missing_model_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match="names no model"):
        parse_model("openai:")


def test_built_in_providers_are_entry_points_like_any_plugin() -> None:
    targets = plugins.providers.targets()
    assert {name: targets[name] for name in BUILT_IN} == BUILT_IN


def test_model_config_validates_and_normalises_model() -> None:
    config = ModelConfig(model="OpenAI:gpt-4o")
    assert config.model == "openai:gpt-4o"
    assert config.ref == ModelRef("openai", "gpt-4o")
    assert (config.max_concurrency, config.timeout, config.options) == (None, 60.0, {})
    assert config.concurrency(object()) == 8  # a backend without a default of its own
    assert config.concurrency(VLLMBackend) == 256  # the engine batches: fill its batches
    assert ModelConfig(model="vllm:m", max_concurrency=16).concurrency(VLLMBackend) == 16
    with pytest.raises(ConfigError):
        ModelConfig(model="gpt-4o")


def test_model_config_is_frozen_and_strict() -> None:
    config = ModelConfig(model="fake:echo", base_url=["http://127.0.0.1:1", "http://127.0.0.1:2"])
    with pytest.raises(Exception, match="frozen"):
        config.timeout = 1.0  # type: ignore[misc]
    with pytest.raises(Exception, match="api_key"):
        ModelConfig(model="fake:echo", api_key="sk-nope")  # type: ignore[call-arg]
    with pytest.raises(Exception, match="max_concurrency"):
        ModelConfig(model="fake:echo", max_concurrency=0)


def test_make_backend_builds_the_fake() -> None:
    backend = make_backend(parse_model("fake:yes"), ModelConfig(model="fake:yes"))
    assert isinstance(backend, FakeBackend)
    assert backend.model == "yes"


async def test_make_llm_from_string_answers() -> None:
    llm = make_llm("fake:echo")
    assert isinstance(llm, LLM)
    assert (llm.provider, llm.model) == ("fake", "echo")
    assert await llm.achat("hello there") == "hello there"
    constant = make_llm(ModelConfig(model="fake:positive", max_concurrency=2))
    assert constant.max_concurrency == 2
    assert await constant.achat("anything") == "positive"


async def test_make_llm_passes_cache_budget_listeners(tmp_path: Path) -> None:
    events = []
    cache = ResponseCache(tmp_path / "c")
    llm = make_llm("fake:echo", cache=cache, listeners=[events.append])
    request = LLMRequest(messages=(Message("user", "hi"),))
    await llm.acomplete(request)
    assert (await llm.acomplete(request)).cached
    assert [e.cached for e in events] == [False, True]
    cache.close()


def _write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")


def test_http_providers_get_base_url_key_env_and_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(
        tmp_path,
        "po_fake_http_backend",
        """
        from promptopt.llm.backends.openai import HTTP

        class Recorder:
            provider = "openai"
            http = HTTP  # what makes a provider an HTTP one
            def __init__(self, **kwargs):
                self.kwargs = kwargs
            async def agenerate(self, request): ...
            async def aclose(self): ...

        class InProcess(Recorder):
            provider = "local"
            http = None
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registered(monkeypatch, openai="po_fake_http_backend:Recorder",
               local="po_fake_http_backend:Recorder")  # fmt: skip
    config = ModelConfig(
        model="openai:llama3:8b",
        base_url="http://127.0.0.1:9/v1",
        timeout=5,
        options={"max_retries": 0},
    )
    backend = make_backend(config.ref, config)
    assert backend.kwargs == {
        "model": "llama3:8b",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "OPENAI_API_KEY",
        "timeout": 5.0,
        "max_retries": 0,
    }
    registered(monkeypatch, local="po_fake_http_backend:InProcess")
    local = ModelConfig(model="local:smollm2", options={"n_ctx": 512})
    assert make_backend(local.ref, local).kwargs == {"model": "smollm2", "n_ctx": 512}


def test_missing_optional_dependency_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(
        tmp_path,
        "po_needs_missing_dep",
        """
        import po_definitely_not_installed_dep
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registered(monkeypatch, local="po_needs_missing_dep:LocalBackend")
    with pytest.raises(
        BackendUnavailableError,
        match=r"provider 'local' needs the package 'po_definitely_not_installed_dep'.*pip install",
    ):
        make_llm("local:smollm2")


def test_import_error_in_constructor_is_translated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(
        tmp_path,
        "po_lazy_dep_backend",
        """
        class VLLMBackend:
            def __init__(self, **kwargs):
                import po_vllm_not_installed
            async def agenerate(self, request): ...
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registered(monkeypatch, vllm="po_lazy_dep_backend:VLLMBackend")
    with pytest.raises(BackendUnavailableError, match=r"needs the package 'po_vllm_not_installed'"):
        make_llm("vllm:some/model")


def test_missing_backend_module_or_class(monkeypatch: pytest.MonkeyPatch) -> None:
    registered(monkeypatch, vllm="promptopt.llm.po_no_such_module:X")
    with pytest.raises(BackendUnavailableError, match="could not be loaded from"):
        make_llm("vllm:m")
    registered(monkeypatch, vllm="promptopt.llm.fakes:NoSuchClass")
    with pytest.raises(BackendUnavailableError, match="NoSuchClass"):
        make_llm("vllm:m")


def test_bad_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid options"):
        make_llm(ModelConfig(model="fake:echo", options={"no_such_option": 1}))


def test_a_provider_registered_as_something_other_than_a_backend_class_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered(monkeypatch, vllm="promptopt.llm.models:DEFAULT_MODEL")  # a string, not a class
    with pytest.raises(BackendUnavailableError, match="not a backend class"):
        make_llm("vllm:m")

"""Model strings, model configuration, and building a client from them.

A model is named ``provider:model``: ``openai:gpt-4o-mini``,
``anthropic:claude-3-5-haiku-latest``, ``openai:llama3:8b`` (with ``base_url``
pointing at Ollama), ``local:smollm2``, ``vllm:Qwen/Qwen2.5-0.5B-Instruct``,
``fake:echo``. :func:`parse_model` is the one place that parses these strings;
:data:`PROVIDERS` is the one table from provider to backend class, imported
lazily so that optional dependencies are only needed when used.

Providers:

- ``openai``: the OpenAI API or any OpenAI-compatible server (``base_url``);
- ``anthropic``: the Anthropic Messages API;
- ``local``: the embedded default, SmolLM2 in-process through llama-cpp-python;
- ``vllm``: an in-process vLLM engine;
- ``fake``: :class:`~promptopt.llm.fakes.FakeBackend`; ``fake:echo`` answers with
  the last user message, ``fake:<text>`` always answers ``<text>``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptopt.errors import BackendUnavailableError, ConfigError
from promptopt.llm.backends._http import public_url
from promptopt.llm.client import LLM, Listener

if TYPE_CHECKING:
    from promptopt.llm.base import Backend
    from promptopt.llm.budget import Budget
    from promptopt.llm.cache import ResponseCache
    from promptopt.llm.pricing import PriceTable

__all__ = [
    "DEFAULT_MODEL",
    "HTTP_PROVIDERS",
    "PROVIDERS",
    "HttpProvider",
    "ModelConfig",
    "ModelRef",
    "make_backend",
    "make_llm",
    "parse_model",
]

DEFAULT_MODEL = "local:smollm2"

PROVIDERS: dict[str, str] = {
    "openai": "promptopt.llm.backends.openai:OpenAIBackend",
    "anthropic": "promptopt.llm.backends.anthropic:AnthropicBackend",
    "local": "promptopt.llm.backends.local:LocalBackend",
    "vllm": "promptopt.llm.backends.vllm:VLLMBackend",
    "fake": "promptopt.llm.fakes:FakeBackend",
}


@dataclass(frozen=True, slots=True)
class HttpProvider:
    """What a provider reached over HTTP needs: its key variable, its endpoint, how it takes a key.

    ``placeholder_key`` goes out when no key is set (local servers ignore it; the
    SDKs refuse to send nothing). ``models_path`` is the free model-list request the
    pre-flight probe sends, with ``headers`` and the key in ``key_header`` after ``key_prefix``.
    """

    key_env: str
    default_url: str
    placeholder_key: str
    models_path: str
    key_header: str
    key_prefix: str = ""
    headers: tuple[tuple[str, str], ...] = ()


# Providers reached over HTTP take base_url, api_key_env and timeout, and are the ones the
# pre-flight checks look at; the key itself is read from the environment by the backend,
# never stored here.
HTTP_PROVIDERS = MappingProxyType(
    {
        "openai": HttpProvider(
            key_env="OPENAI_API_KEY",
            default_url="https://api.openai.com/v1",
            placeholder_key="sk-no-key-needed",
            models_path="/models",
            key_header="Authorization",
            key_prefix="Bearer ",
        ),
        "anthropic": HttpProvider(
            key_env="ANTHROPIC_API_KEY",
            default_url="https://api.anthropic.com",
            placeholder_key="sk-ant-no-key-needed",
            models_path="/v1/models",
            key_header="x-api-key",
            headers=(("anthropic-version", "2023-06-01"),),
        ),
    }
)

# What to install when a provider's optional dependency is missing.
_INSTALL_HINT = MappingProxyType(
    {
        "openai": "pip install aiohttp",
        "anthropic": "pip install anthropic",
        "local": "pip install 'promptopt[local]'",
        "vllm": "pip install 'promptopt[vllm]'",
    }
)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed model string: the provider and the model name inside it."""

    provider: str
    name: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.name}"


def parse_model(s: str | None) -> ModelRef:
    """Parse ``provider:model``; None or empty means the embedded default ``local:smollm2``."""
    text = (s or "").strip() or DEFAULT_MODEL
    provider, colon, name = text.partition(":")
    provider, name = provider.strip().lower(), name.strip()
    known = sorted(PROVIDERS)
    if not colon:
        raise ConfigError(
            f"model {text!r} has no provider; write 'provider:model', e.g. "
            f"{'openai:' + text!r}, {'anthropic:' + text!r} or {'local:' + text!r} "
            f"(providers: {', '.join(known)})"
        )
    if provider not in PROVIDERS:
        raise ConfigError(
            f"unknown provider {provider!r} in model {text!r}; known providers: {', '.join(known)}"
        )
    if not name:
        raise ConfigError(f"model {text!r} names no model after {provider + ':'!r}")
    return ModelRef(provider, name)


class ModelConfig(BaseModel):
    """How to reach one model; validated once where it is read (task.yaml, CLI, code).

    ``options`` go to the backend's constructor as keyword arguments (for
    example ``n_ctx`` for ``local`` or ``max_retries`` for an SDK). API keys are
    never part of a config: ``api_key_env`` names the environment variable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    base_url: str | list[str] | None = None
    api_key_env: str | None = None
    max_concurrency: int = Field(default=8, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _valid_model(cls, value: str) -> str:
        return str(parse_model(value))

    @property
    def ref(self) -> ModelRef:
        return parse_model(self.model)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The public URLs this model is reached at; none for in-process providers."""
        http = HTTP_PROVIDERS.get(self.ref.provider)
        if http is None:
            return ()
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url or [])
        return tuple(public_url(url) for url in urls or [http.default_url])

    @property
    def key_env(self) -> str | None:
        """The environment variable that must hold this model's API key; None if it needs none.

        A provider's own endpoint needs its key; a ``base_url`` (a local server that
        takes any key) needs one only when ``api_key_env`` names it.
        """
        http = HTTP_PROVIDERS.get(self.ref.provider)
        if http is None or (self.base_url and not self.api_key_env):
            return None
        return self.api_key_env or http.key_env


def _import_backend(ref: ModelRef) -> type[Backend]:
    module_name, _, class_name = PROVIDERS[ref.provider].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            raise BackendUnavailableError(
                f"provider {ref.provider!r} has no backend module {module_name!r} in this install"
            ) from exc
        raise _unavailable(ref, exc) from exc
    try:
        return getattr(module, class_name)
    except AttributeError as exc:
        raise BackendUnavailableError(
            f"backend module {module_name!r} has no class {class_name!r}"
        ) from exc


def _unavailable(ref: ModelRef, exc: ImportError) -> BackendUnavailableError:
    hint = _INSTALL_HINT.get(ref.provider, "install its dependencies")
    missing = exc.name or str(exc)
    return BackendUnavailableError(
        f"provider {ref.provider!r} needs the package {missing!r}, which is not installed; "
        f"run: {hint}"
    )


def make_backend(ref: ModelRef, config: ModelConfig) -> Backend:
    """Construct the backend for ``ref`` with the settings of ``config``."""
    cls = _import_backend(ref)
    kwargs: dict[str, Any] = {**config.options, "model": ref.name}
    if ref.provider in HTTP_PROVIDERS:
        kwargs["base_url"] = config.base_url
        kwargs["api_key_env"] = config.api_key_env or HTTP_PROVIDERS[ref.provider].key_env
        kwargs["timeout"] = config.timeout
    try:
        return cls(**kwargs)
    except ImportError as exc:  # backends may import their heavy dependency on construction
        raise _unavailable(ref, exc) from exc
    except TypeError as exc:
        raise ConfigError(
            f"invalid options for provider {ref.provider!r}: {sorted(config.options)!r}: {exc}"
        ) from exc


def make_llm(
    config: ModelConfig | str | None,
    *,
    cache: ResponseCache | None = None,
    budget: Budget | None = None,
    prices: PriceTable | None = None,
    listeners: Sequence[Listener] = (),
) -> LLM:
    """A client for ``config`` (a ModelConfig, a model string, or None for the default)."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig(model=str(parse_model(config)))
    ref = config.ref
    backend = make_backend(ref, config)
    return LLM(
        backend,
        provider=ref.provider,
        model=ref.name,
        cache=cache,
        budget=budget,
        max_concurrency=config.max_concurrency,
        prices=prices,
        listeners=listeners,
    )

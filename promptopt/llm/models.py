"""Model strings, model configuration, and building a client from them.

A model is named ``provider:model``: ``openai:gpt-4o-mini``,
``anthropic:claude-3-5-haiku-latest``, ``openai:llama3:8b`` (with ``base_url``
pointing at Ollama), ``local:smollm2``, ``vllm:Qwen/Qwen2.5-0.5B-Instruct``,
``fake:echo``. :func:`parse_model` is the one place that parses these strings.
Providers are plugins: the ``promptopt.providers`` entry-point group maps each
name to its backend class (:data:`promptopt.plugins.providers`; promptopt's own
are registered there like anyone's), imported only when a model of it is used.
A backend class reached over HTTP declares its endpoint and key variable as
its ``http`` class attribute (:class:`HttpProvider`).

Providers:

- ``openai``: the OpenAI API or any OpenAI-compatible server (``base_url``);
- ``anthropic``: the Anthropic Messages API;
- ``local``: the embedded default, SmolLM2 in-process through llama-cpp-python;
- ``vllm``: an in-process vLLM engine;
- ``fake``: :class:`~promptopt.llm.fakes.FakeBackend`; ``fake:echo`` answers with
  the last user message, ``fake:<text>`` always answers ``<text>``;
- any provider an installed package registers in ``promptopt.providers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptopt import plugins
from promptopt.errors import BackendUnavailableError, ConfigError
from promptopt.llm.backends._http import HttpProvider, public_url
from promptopt.llm.client import LLM, Listener

if TYPE_CHECKING:
    from promptopt.llm.base import Backend
    from promptopt.llm.budget import Budget
    from promptopt.llm.cache import ResponseCache
    from promptopt.llm.pricing import PriceTable

__all__ = [
    "DEFAULT_MODEL",
    "HttpProvider",
    "ModelConfig",
    "ModelRef",
    "backend_class",
    "http_of",
    "make_backend",
    "make_llm",
    "parse_model",
    "providers",
]

DEFAULT_MODEL = "local:smollm2"


def providers() -> list[str]:
    """Every registered provider name, sorted."""
    return plugins.providers.available()


def backend_class(provider: str) -> type[Backend]:
    """The backend class registered for ``provider`` (its module imported now).

    BackendUnavailableError for a provider nobody registered, one whose module or
    class is missing, or one whose own dependency is not installed (naming it).
    """
    cls = plugins.providers.get(provider)
    if not (isinstance(cls, type) and callable(getattr(cls, "agenerate", None))):
        raise BackendUnavailableError(
            f"provider {provider!r} is registered as {cls!r}, which is not a backend class"
        )
    return cast("type[Backend]", cls)  # checked above: a class with agenerate


def http_of(provider: str) -> HttpProvider | None:
    """What ``provider`` declares about its HTTP endpoint; None if it runs in-process."""
    return _declared_http(backend_class(provider))


def _declared_http(cls: type) -> HttpProvider | None:
    http = getattr(cls, "http", None)
    return http if isinstance(http, HttpProvider) else None


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
    known = providers()
    if not colon:
        raise ConfigError(
            f"model {text!r} has no provider; write 'provider:model', e.g. "
            f"{'openai:' + text!r}, {'anthropic:' + text!r} or {'local:' + text!r} "
            f"(providers: {', '.join(known)})"
        )
    if provider not in known:
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

    # the one definition of these fields; a task file's ModelSpec inherits them (descriptions
    # included: they are the schema's)
    model: str = Field(description="'provider:model', e.g. 'openai:gpt-4o-mini'.")
    base_url: str | list[str] | None = Field(None, description="OpenAI-compatible endpoint(s).")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    max_concurrency: int | None = Field(
        None,
        ge=1,
        description="Requests in flight per endpoint; default 8, or the provider's own "
        "(vllm: 256, to fill the engine's batches).",
    )
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    options: dict[str, Any] = Field(default_factory=dict, description="Provider-specific options.")

    @field_validator("model")
    @classmethod
    def _valid_model(cls, value: str) -> str:
        return str(parse_model(value))

    @property
    def ref(self) -> ModelRef:
        return parse_model(self.model)

    def concurrency(self, backend: object) -> int:
        """``max_concurrency``, or ``backend``'s own default (``default_concurrency``), or 8."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        return int(getattr(backend, "default_concurrency", 8))

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The public URLs this model is reached at; none for in-process providers."""
        http = http_of(self.ref.provider)
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
        http = http_of(self.ref.provider)
        if http is None or (self.base_url and not self.api_key_env):
            return None
        return self.api_key_env or http.key_env


def make_backend(ref: ModelRef, config: ModelConfig) -> Backend:
    """Construct the backend for ``ref`` with the settings of ``config``."""
    cls = backend_class(ref.provider)
    http = _declared_http(cls)
    kwargs: dict[str, Any] = {**config.options, "model": ref.name}
    if http is not None:
        kwargs["base_url"] = config.base_url
        kwargs["api_key_env"] = config.api_key_env or http.key_env
        kwargs["timeout"] = config.timeout
    try:
        return cls(**kwargs)
    except ImportError as exc:  # backends may import their heavy dependency on construction
        raise BackendUnavailableError(
            f"provider {ref.provider!r} needs the package {exc.name or str(exc)!r}, which is "
            "not installed"
        ) from exc
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
        max_concurrency=config.concurrency(backend),
        prices=prices,
        listeners=listeners,
    )

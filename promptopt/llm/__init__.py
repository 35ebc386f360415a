"""The LLM layer: typed requests and responses, the client stack, model strings, and fakes.

Build a client with :func:`make_llm` (``make_llm("openai:gpt-4o-mini")``) or wrap a
backend in :class:`LLM` directly; test with :func:`fake_llm` / :func:`scripted_llm`.
Backends live in :mod:`promptopt.llm.backends` and are imported lazily.
"""

from promptopt.llm.base import Backend
from promptopt.llm.budget import Budget, Reservation
from promptopt.llm.cache import CachePolicy, ResponseCache, default_cache_dir
from promptopt.llm.client import LLM, CallEvent, Listener, UsageStats
from promptopt.llm.fakes import FakeBackend, ReplayBackend, ScriptedBackend, fake_llm, scripted_llm
from promptopt.llm.models import (
    DEFAULT_MODEL,
    HttpProvider,
    ModelConfig,
    ModelRef,
    make_backend,
    make_llm,
    parse_model,
    providers,
)
from promptopt.llm.pricing import Price, PriceTable
from promptopt.llm.retry import RetryPolicy
from promptopt.llm.types import LLMRequest, LLMResponse, Message, Role, Usage, messages

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "Backend",
    "Budget",
    "CachePolicy",
    "CallEvent",
    "FakeBackend",
    "HttpProvider",
    "LLMRequest",
    "LLMResponse",
    "Listener",
    "Message",
    "ModelConfig",
    "ModelRef",
    "Price",
    "PriceTable",
    "ReplayBackend",
    "Reservation",
    "ResponseCache",
    "RetryPolicy",
    "Role",
    "ScriptedBackend",
    "Usage",
    "UsageStats",
    "default_cache_dir",
    "fake_llm",
    "make_backend",
    "make_llm",
    "messages",
    "parse_model",
    "providers",
    "scripted_llm",
]

"""What the HTTP backends share: Retry-After parsing, SDK-exception translation, public URLs,
and one SDK client per event loop.

The ``openai`` and ``anthropic`` SDKs raise exceptions of the same shape
(``APIStatusError`` with a ``status_code`` and a ``response``,
``APITimeoutError`` under ``APIConnectionError``). :func:`translate_sdk_error`
maps them onto :mod:`promptopt.errors` by HTTP status, using one table, and
scrubs the API key out of every message it builds (with
:func:`promptopt.secrets.redact_values`). Only failures that may pass become
retryable errors (429, 408, 409, 5xx); every other 4xx, and a 5xx whose message
names a request-validation failure, is a ``BadRequestError``: sending the same
request again would fail the same way. :class:`PerLoop` keeps one
SDK client per event loop, because an async HTTP client's connections belong to
the loop that opened them (``LLM.complete`` runs a fresh loop per call); :func:`sdk_clients`
makes them, each with an HTTP client that shares the process's one TLS context.
:class:`HttpProvider` is what a backend class declares about its endpoint and key.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import importlib
import re
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from promptopt.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from promptopt.secrets import redact_values

__all__ = [
    "HttpProvider",
    "PerLoop",
    "parse_retry_after",
    "public_url",
    "sdk_clients",
    "status_error",
    "translate_sdk_error",
]


@dataclass(frozen=True, slots=True)
class HttpProvider:
    """What a provider reached over HTTP needs: its key variable, its endpoint, how it takes a key.

    A backend class declares one as its ``http`` class attribute; the model
    configuration (``base_url``, ``api_key_env``), the pre-flight checks and the
    probe read it from there. ``placeholder_key`` goes out when no key is set
    (local servers ignore it; the SDKs refuse to send nothing). ``models_path`` is
    the free model-list request the pre-flight probe sends, with ``headers`` and
    the key in ``key_header`` after ``key_prefix``.
    """

    key_env: str
    default_url: str
    placeholder_key: str
    models_path: str
    key_header: str
    key_prefix: str = ""
    headers: tuple[tuple[str, str], ...] = ()


T = TypeVar("T")

# The HTTP libraries the SDKs send with (httpx2 from openai/anthropic 3 on, httpx before).
_HTTP_LIBRARIES = ("httpx2", "httpx")

# HTTP status -> error class, for the statuses that are not 429 or 5xx.
_STATUS_ERRORS: dict[int, type[LLMError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    408: LLMTimeoutError,
    409: ConflictError,
}
# llama-cpp-python's server answers a body that fails its validation with HTTP 500 and
# FastAPI's text as the message: "1 validation error:\n  {'type': 'float_parsing', 'loc':
# ('body', 'temperature'), ...}" (older FastAPI: the list of errors alone).
_VALIDATION_FAILURE = re.compile(r"\b\d+ validation errors?\b|'loc': \('body'")


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    Returns ``None`` when neither header is present or readable; never a negative number.
    """
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe for cache keys, logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def status_error(
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> LLMError:
    """The promptopt error for an HTTP error ``status`` (429, 5xx, 401/403, other 4xx).

    A 5xx whose ``message`` names a request-validation failure is a ``BadRequestError``.
    """
    retry_after = parse_retry_after(headers)
    if status == 429:
        return RateLimitError(message, retry_after=retry_after)
    if status >= 500:
        if _VALIDATION_FAILURE.search(message):
            return BadRequestError(message)
        return ServerError(message, status=status, retry_after=retry_after)
    error_class = _STATUS_ERRORS.get(status)
    if error_class is not None:
        return error_class(message)
    if 400 <= status < 500:
        return BadRequestError(message)
    return LLMError(message)


def translate_sdk_error(
    exc: BaseException,
    *,
    sdk: ModuleType,
    where: str,
    secrets: Iterable[str | None] = (),
) -> LLMError:
    """Map an exception of the ``openai`` or ``anthropic`` SDK (passed as ``sdk``) to promptopt's tree.

    ``where`` names the endpoint (a :func:`public_url`), kept on the error as ``endpoint``;
    ``secrets`` are scrubbed from the message.
    """
    error = _translated(exc, sdk=sdk, where=where, secrets=tuple(secrets))
    error.endpoint = where
    return error


def _translated(
    exc: BaseException, *, sdk: ModuleType, where: str, secrets: tuple[str | None, ...]
) -> LLMError:
    if isinstance(exc, sdk.APIStatusError):
        detail = redact_values(str(getattr(exc, "message", "") or exc), secrets)
        message = f"{where!r} answered HTTP {exc.status_code}: {detail}"
        return status_error(exc.status_code, message, headers=exc.response.headers)
    if isinstance(exc, sdk.APITimeoutError):
        return LLMTimeoutError(f"{where!r} did not answer in time")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        reason = redact_values(f"{type(cause).__name__}: {cause}" if cause else str(exc), secrets)
        return LLMConnectionError(f"connection to {where!r} failed ({reason})")
    detail = redact_values(f"{type(exc).__name__}: {exc}", secrets)
    return LLMError(f"request to {where!r} failed: {detail}")


class PerLoop(Generic[T]):
    """One ``factory()`` value per running event loop, made on first use, forgotten with its loop."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The value for the running loop (call from inside a coroutine)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            value = self._values.get(loop)
            if value is None:
                value = self._values[loop] = self._factory()
            return value

    def pop_current(self) -> T | None:
        """Forget every value; return the running loop's one (if any) for the caller to close."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            value = self._values.get(loop) if loop is not None else None
            self._values.clear()
        return value


def sdk_clients(
    sdk: ModuleType, client_class: Callable[..., T], *, key: str, url: str | None, timeout: float
) -> PerLoop[T]:
    """One ``client_class`` of ``sdk`` per event loop (``AsyncOpenAI``, ``AsyncAnthropic``), for
    ``url`` (None: the SDK's default), without the SDK's own retries."""
    return PerLoop(
        lambda: client_class(
            api_key=key,
            base_url=url,
            timeout=timeout,
            max_retries=0,
            http_client=_http_client(sdk, timeout=timeout),
        )
    )


def _http_client(sdk: ModuleType, *, timeout: float) -> Any | None:
    """The SDK's default async HTTP client, with the process's one TLS context; None when the
    SDK's HTTP library is not one that :data:`_HTTP_LIBRARIES` names (the SDK then makes its own).

    A client the SDK makes builds its own TLS context, reading the CA bundle again: tens of
    milliseconds of CPU on each run's first request to each model, every run of a process.
    """
    client_class = sdk.DefaultAsyncHttpxClient
    for name in _HTTP_LIBRARIES:
        try:
            library = importlib.import_module(name)
        except ImportError:
            continue
        if issubclass(client_class, library.AsyncClient):
            return client_class(verify=_tls_context(name), timeout=timeout)
    return None


@functools.cache
def _tls_context(library: str) -> ssl.SSLContext:
    """The default TLS context of the HTTP library ``library``, made once."""
    return importlib.import_module(library).create_ssl_context()

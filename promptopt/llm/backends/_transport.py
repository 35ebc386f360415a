"""A lean JSON-over-HTTP transport on ``aiohttp``: POST a JSON body, get its JSON answer, or a
:mod:`promptopt.errors` exception.

Why not a provider's SDK: a chat call through ``openai.AsyncOpenAI`` costs 4-5 ms of CPU
(request models, httpx, response models); a POST through aiohttp costs under half a
millisecond. A round of 30 calls on two loaded cores went from over 400 ms to the
server's 200 ms plus little.

:class:`JsonTransport` keeps one ``aiohttp.ClientSession`` per event loop (connections
belong to the loop that opened them; ``LLM.complete`` runs its own loop), all sharing the
process's one TLS context; a session closes with its loop if nothing closed it before.
Like the SDK's httpx client, it takes a proxy from the environment (``HTTPS_PROXY``,
``HTTP_PROXY``, ``NO_PROXY``), read once per session; not through aiohttp's ``trust_env``,
which reads ``~/.netrc`` on every request (in a thread) and refuses a request whose host is
there, because the request carries its own ``Authorization``. Error messages keep the
SDK's form, ``Error code: 429 - <the body's error message>``, so
:func:`~promptopt.llm.backends._http.status_error` reads what it did.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import ssl
import urllib.request
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from promptopt.errors import LLMConnectionError, LLMError, LLMTimeoutError
from promptopt.llm.backends._http import PerLoop, status_error
from promptopt.secrets import redact_values

__all__ = ["USER_AGENT", "JsonTransport", "tls_context"]

try:
    _VERSION = importlib.metadata.version("promptopt")
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    _VERSION = "0"
USER_AGENT = f"promptopt/{_VERSION} aiohttp/{aiohttp.__version__}"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), made once.

    Each context reads the CA bundle again: tens of milliseconds of CPU.
    """
    return ssl.create_default_context()


@dataclass(frozen=True, slots=True)
class _Session:
    http: aiohttp.ClientSession
    proxy: str | None
    proxy_auth: aiohttp.BasicAuth | None
    closer: AsyncGenerator[None, None]


async def _closes_with_its_loop(http: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Closes ``http`` when the loop shuts its async generators down, or when this is dropped.

    A session left open logs "Unclosed client session" when collected, and code that runs
    each call in its own ``asyncio.run`` leaves one per loop; ``asyncio.run`` (and every
    ``asyncio.Runner``) closes the loop's async generators before closing the loop.
    """
    try:
        yield
    finally:
        await http.close()


def _started(generator: AsyncGenerator[None, None]) -> AsyncGenerator[None, None]:
    """``generator`` run to its first ``yield``, so that the running loop tracks it."""
    try:
        generator.__anext__().send(None)
    except StopIteration:
        return generator
    raise AssertionError("the generator awaited before its first yield")


class JsonTransport:
    """POSTs JSON to one ``url`` with fixed ``headers``; failures become promptopt errors.

    ``where`` (a public URL) names the endpoint in messages and on each error as
    ``endpoint``; ``secrets`` are scrubbed from every message. ``timeout`` bounds a
    whole request, connecting and reading the answer included.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        where: str,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.url = url
        self.where = where
        self._headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "Accept": "application/json",
            **headers,
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._secrets = tuple(secrets)
        self._sessions: PerLoop[_Session] = PerLoop(self._open)

    def _open(self) -> _Session:
        proxy, proxy_auth = _env_proxy(self.url)
        # No connection limit: the client's semaphore already bounds requests in flight.
        connector = aiohttp.TCPConnector(limit=0, ssl=tls_context())
        http = aiohttp.ClientSession(
            connector=connector, headers=self._headers, timeout=self._timeout
        )
        return _Session(http, proxy, proxy_auth, _started(_closes_with_its_loop(http)))

    async def post(self, body: Mapping[str, Any]) -> Any:
        """The JSON answer to ``body``, for a 2xx status; raises an :class:`LLMError` otherwise."""
        session = self._sessions.get()
        data = json.dumps(body).encode()
        try:
            async with session.http.post(
                self.url, data=data, proxy=session.proxy, proxy_auth=session.proxy_auth
            ) as response:
                status, headers = response.status, response.headers
                payload = await response.read()
        except Exception as exc:  # noqa: BLE001 - every failure leaves as a promptopt error
            raise self._failure(exc) from None
        if status >= 400:
            raise self._located(self._status_failure(status, payload, headers)) from None
        try:
            return json.loads(payload)
        except ValueError as exc:
            detail = redact_values(f"{type(exc).__name__}: {exc}", self._secrets)
            raise self._located(
                LLMError(f"request to {self.where!r} failed: HTTP {status}, not JSON: {detail}")
            ) from None

    async def aclose(self) -> None:
        """Close the running loop's session; forget those of other loops."""
        session = self._sessions.pop_current()
        if session is not None:
            await session.http.close()

    def _status_failure(self, status: int, payload: bytes, headers: Mapping[str, str]) -> LLMError:
        detail = redact_values(_status_message(status, payload), self._secrets)
        message = f"{self.where!r} answered HTTP {status}: {detail}"
        return status_error(status, message, headers=headers)

    def _failure(self, exc: Exception) -> LLMError:
        if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
            return self._located(LLMTimeoutError(f"{self.where!r} did not answer in time"))
        reason = redact_values(f"{type(exc).__name__}: {exc}", self._secrets)
        if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
            return self._located(
                LLMConnectionError(f"connection to {self.where!r} failed ({reason})")
            )
        return self._located(LLMError(f"request to {self.where!r} failed: {reason}"))

    def _located(self, error: LLMError) -> LLMError:
        error.endpoint = self.where
        return error


def _status_message(status: int, payload: bytes) -> str:
    """The SDK's message for an error answer: the status, and the body's error message if any."""
    message = f"Error code: {status}"
    try:
        body = json.loads(payload.decode("utf-8", "replace").strip())
    except ValueError:
        return message
    error = body.get("error", body) if isinstance(body, dict) else None
    text = error.get("message") if isinstance(error, dict) else None
    if isinstance(text, str) and text:
        message += f" - {text}"
    return message


def _env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (``NO_PROXY`` honoured), its credentials apart."""
    host = urlsplit(url).hostname
    if host and urllib.request.proxy_bypass(host):
        return None, None
    proxy = urllib.request.getproxies().get(urlsplit(url).scheme)
    if not proxy:
        return None, None
    parts = urlsplit(proxy)
    if parts.username is None:
        return proxy, None
    auth = aiohttp.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), auth

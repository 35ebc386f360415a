"""The pre-flight probe: one free GET of an HTTP provider's model list, without its SDK.

Listing models bills nothing, yet it needs a reachable server and (on a provider's
own endpoint) a valid key, so it shows before a run whether the run can talk to
its model at all. The request is built from what the provider's backend class
declares (its ``http``: :class:`~promptopt.llm.backends._http.HttpProvider`) and
sent with the standard library in a thread of its own (``aio.in_thread``): a run that cannot start never waits for an SDK to import.
Failures are the errors the backends raise (:func:`~promptopt.llm.backends._http.status_error`
for HTTP statuses), with ``endpoint`` set and the key scrubbed from messages.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request

from promptopt import aio
from promptopt.errors import LLMConnectionError, LLMError, LLMTimeoutError
from promptopt.llm.backends._http import public_url, status_error
from promptopt.llm.models import ModelConfig, http_of
from promptopt.secrets import redact_values

__all__ = ["probe_model"]


async def probe_model(config: ModelConfig, *, timeout: float) -> None:
    """Ask every endpoint of ``config`` for its model list; raise an LLMError if one fails."""
    provider = http_of(config.ref.provider)
    if provider is None:
        return  # in-process: nothing to reach
    key = os.environ.get(config.api_key_env or provider.key_env) or provider.placeholder_key
    headers = {**dict(provider.headers), provider.key_header: provider.key_prefix + key}
    urls = [config.base_url] if isinstance(config.base_url, str) else list(config.base_url or [])
    for url in urls or [provider.default_url]:
        where = public_url(url)
        target = url.rstrip("/") + provider.models_path
        try:
            await aio.in_thread(_get, target, headers, timeout=timeout, where=where, key=key)
        except LLMError as exc:
            exc.endpoint = where
            raise


def _get(url: str, headers: dict[str, str], *, timeout: float, where: str, key: str) -> None:
    """GET ``url`` and read a byte of the answer; raise the LLMError for what went wrong."""
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(1)
    except urllib.error.HTTPError as exc:
        detail = redact_values(str(exc.reason), [key])
        message = f"{where!r} answered HTTP {exc.code}: {detail}"
        raise status_error(exc.code, message, headers=dict(exc.headers.items())) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(cause, TimeoutError):
            raise LLMTimeoutError(f"{where!r} did not answer within {timeout:g} s") from None
        named = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause
        reason = redact_values(str(named), [key])
        raise LLMConnectionError(f"connection to {where!r} failed ({reason})") from None

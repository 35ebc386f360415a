"""The backend protocol.

A backend turns one :class:`~promptopt.llm.types.LLMRequest` into one
:class:`~promptopt.llm.types.LLMResponse` and nothing more: caching, retries,
concurrency limits, cost and budget are the client's job
(:mod:`promptopt.llm.client`), shared by every backend. Backends translate their
SDK's exceptions into :mod:`promptopt.errors` at their boundary.

Backend classes are found by provider name through the ``promptopt.providers``
entry-point group (:data:`promptopt.plugins.providers`), promptopt's own
included; one reached over HTTP also declares ``http``, an
:class:`~promptopt.llm.backends._http.HttpProvider`.
:func:`promptopt.testing.check_backend` holds a class to this contract.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from promptopt.llm.types import LLMRequest, LLMResponse

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    provider: ClassVar[str]

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        """Send one request; raise a :class:`promptopt.errors.LLMError` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or models held by the backend."""
        ...

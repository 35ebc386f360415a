"""Whether a model can be used at all: the client's breaker for a model that never answered.

A model whose first request fails with a connection error (after its retries), a
rejected key (HTTP 401/403) or an unknown model (HTTP 404), before any request
was answered, will fail every request of the run the same way; scoring each
example 0 would only look like a result. :class:`Health` turns the first such
failure into a :class:`~promptopt.errors.ModelUnusableError` naming the model,
the endpoint and the cause, and from then on refuses every request of its
client (requests waiting to retry stop at their next attempt). Once the model
has answered, failures are left to the retries and the engine's per-example
isolation. :func:`unusable` is the same judgement for the pre-flight probe.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from types import MappingProxyType

from promptopt.errors import (
    AuthenticationError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    ModelUnusableError,
    NotFoundError,
)

__all__ = ["CAUSES", "IN_RUN", "Health", "unusable"]

# What each kind of failure says about the model, in the one line the user sees.
CAUSES: MappingProxyType[type[LLMError], str] = MappingProxyType(
    {
        LLMConnectionError: "cannot connect",
        AuthenticationError: "the API key was refused",
        NotFoundError: "the server knows no such model (or path)",
        LLMTimeoutError: "no answer in time",
    }
)
# The failures that, before any answer, show a model cannot serve the run. Timeouts are
# left out: a model still loading may be slow at first, and the retries wait for it.
IN_RUN: frozenset[type[LLMError]] = frozenset(
    {LLMConnectionError, AuthenticationError, NotFoundError}
)


def unusable(
    error: BaseException, *, model: str, kinds: Collection[type[LLMError]] = IN_RUN
) -> ModelUnusableError | None:
    """The ModelUnusableError that ``error`` amounts to for ``model``, if it is one of ``kinds``."""
    if isinstance(error, ModelUnusableError) or not isinstance(error, LLMError):
        return None
    kind = next((k for k in type(error).__mro__ if k in CAUSES and k in kinds), None)
    if kind is None:
        return None
    return ModelUnusableError(
        model=model, endpoint=error.endpoint, cause=f"{CAUSES[kind]}: {error}"
    )


class Health:
    """One client's view of its model: has it ever answered, and has it been found unusable."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.answered = False
        self._failed: ModelUnusableError | None = None
        self._lock = threading.Lock()

    @property
    def failed(self) -> ModelUnusableError | None:
        """The error that showed the model unusable, or None."""
        return self._failed

    def check(self) -> None:
        """Raise (a fresh copy of) the ModelUnusableError if the model was found unusable."""
        failed = self._failed
        if failed is not None:
            raise ModelUnusableError(
                model=failed.model, endpoint=failed.endpoint, cause=failed.cause
            )

    def note_answer(self) -> None:
        self.answered = True

    def note_failure(self, error: BaseException) -> ModelUnusableError | None:
        """The error to raise instead of ``error`` when it shows the model unusable, else None."""
        with self._lock:
            if self.answered or self._failed is not None:
                return None
            self._failed = unusable(error, model=self.model)
            return self._failed

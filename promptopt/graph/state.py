"""The one context variable that says which trace, and which node in it, is running.

Its value is ``None`` outside any trace, else a ``(trace, call)`` pair where
``call`` is the innermost node execution in progress (``None`` at the top of a
trace). It is a ``ContextVar``, not a global: every asyncio task and every
``contextvars.Context`` sees its own value, so concurrent workflows never see
each other's traces, and a new thread starts outside any trace.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["STATE"]

STATE: ContextVar[tuple[Any, Any] | None] = ContextVar("promptopt_trace", default=None)

"""Retry policy: which failures are retried, and how long to wait between attempts.

Only :class:`promptopt.errors.RetryableError` (429, 408, 409, 5xx, timeouts,
dropped connections) is retried; a request the backend refused (any other 4xx,
or a 5xx naming a validation failure: a ``BadRequestError``) would fail the same
way again, and is raised at once. The wait grows exponentially with jitter,
except when the backend said how long to wait (``Retry-After``): then exactly
that, capped.
Randomness comes in as an ``rng`` so waits are reproducible in tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from promptopt.errors import ConfigError, RetryableError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one logical request is retried.

    ``max_attempts`` counts every try, the first included (1 means never retry).
    ``jitter`` is the relative spread of the backoff: 0.1 means +-10%.
    """

    max_attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 20.0
    max_retry_after: float = 120.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts!r}")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"{name} must not be negative, got {value!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def should_retry(self, error: BaseException, *, attempt: int) -> bool:
        """Whether to try again after ``attempt`` (1-based) failed with ``error``."""
        return isinstance(error, RetryableError) and attempt < self.max_attempts

    def delay(self, attempt: int, error: RetryableError, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if error.retry_after is not None:
            return min(max(float(error.retry_after), 0.0), self.max_retry_after)
        backoff = min(self.base_delay * 2.0 ** max(attempt - 1, 0), self.max_delay)
        spread = rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return min(max(backoff * (1.0 + spread), 0.0), self.max_delay)

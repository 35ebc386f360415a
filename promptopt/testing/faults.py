"""A deterministic plan of injected failures for the loopback test servers.

A :class:`FaultPlan` maps fault kinds to rates: an HTTP status (``"429"``,
``"500"``, ``"529"``), ``"timeout"`` (the server sleeps past the client's
timeout), ``"drop"`` (the server closes the connection without answering) or
``"validation"`` (HTTP 500 whose message is a request-validation failure, the
way llama-cpp-python's server refuses a body it cannot validate).
Whether a request fails, and how, is a pure function of the seed, the request's
canonical body and how many times that same body was seen before: the same
workload meets the same faults whatever order concurrency delivers it in, and
``max_per_request`` guarantees that a client retrying often enough succeeds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promptopt.errors import ConfigError

__all__ = ["FaultPlan", "request_key"]

_NAMED_KINDS = frozenset({"timeout", "drop", "validation"})


def _check_kind(kind: str) -> None:
    if kind in _NAMED_KINDS:
        return
    if kind.isdigit() and 400 <= int(kind) <= 599:
        return
    raise ConfigError(
        f"unknown fault kind {kind!r}: use an HTTP status 400-599, 'timeout', 'drop' "
        "or 'validation'"
    )


def request_key(body: Any) -> str:
    """A stable digest of a JSON request body (key order does not matter)."""
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail, and how.

    ``rates`` maps a fault kind to the fraction of attempts that meet it (their
    sum at most 1). ``retry_after`` is the Retry-After (seconds) sent with 429,
    503 and 529 answers (``None``: no header). ``hang_s`` is how long a
    ``timeout`` fault holds the request. ``max_per_request``, when set, caps the
    number of faulted attempts of one identical request body.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: float | None = 0.05
    hang_s: float = 3.0
    max_per_request: int | None = None

    def __post_init__(self) -> None:
        total = 0.0
        for kind, rate in self.rates.items():
            _check_kind(kind)
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"fault rate for {kind!r} must be within [0, 1], got {rate!r}")
            total += rate
        if total > 1.0 + 1e-9:
            raise ConfigError(f"fault rates add up to {total!r}, more than 1")
        object.__setattr__(self, "rates", dict(sorted(self.rates.items())))

    @classmethod
    def parse(cls, spec: str, **options: Any) -> FaultPlan:
        """Build a plan from ``"429=0.1,500=0.1,timeout=0.05,drop=0.05"`` (empty: no faults)."""
        rates: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kind, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"fault {item!r} must look like KIND=RATE, e.g. '429=0.1'")
            try:
                rates[kind.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"fault rate {value!r} of {kind!r} is not a number") from None
        return cls(rates, **options)

    @property
    def active(self) -> bool:
        return any(rate > 0 for rate in self.rates.values())

    def decide(self, key: str, attempt: int) -> str | None:
        """The fault kind for the ``attempt``-th sighting (from 0) of request ``key``, or ``None``."""
        if not self.active:
            return None
        if self.max_per_request is not None and attempt >= self.max_per_request:
            return None
        digest = hashlib.sha256(f"{self.seed}\0{key}\0{attempt}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        threshold = 0.0
        for kind, rate in self.rates.items():
            threshold += rate
            if draw < threshold:
                return kind
        return None

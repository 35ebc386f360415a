"""Prices of paid models, and the cost of one call.

A :class:`PriceTable` maps ``"provider:model"`` to a :class:`Price` in US dollars
per million tokens. The built-in table holds a few well-known models at their
public list prices; pass ``overrides`` for anything else or when prices change.
Models run by the user (``local``, ``vllm``) and the fakes cost nothing. A paid
model missing from the table also costs 0: check :meth:`PriceTable.known` when a
dollar budget matters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from promptopt.errors import ConfigError
from promptopt.llm.types import Usage

__all__ = ["DEFAULT_PRICES", "FREE_PROVIDERS", "Price", "PriceTable"]

_MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million input (prompt) and output (completion) tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def __post_init__(self) -> None:
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise ConfigError(f"prices must not be negative, got {self!r}")

    def cost(self, usage: Usage) -> float:
        return (
            usage.prompt_tokens * self.input_per_mtok
            + usage.completion_tokens * self.output_per_mtok
        ) / _MTOK


# Public list prices as assumed on 2025-06-01 (standard tier, no batch or cache discounts).
DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(
    {
        "openai:gpt-4o": Price(2.50, 10.00),
        "openai:gpt-4o-mini": Price(0.15, 0.60),
        "openai:gpt-4.1": Price(2.00, 8.00),
        "openai:gpt-4.1-mini": Price(0.40, 1.60),
        "openai:gpt-4.1-nano": Price(0.10, 0.40),
        "openai:o4-mini": Price(1.10, 4.40),
        "anthropic:claude-3-5-haiku": Price(0.80, 4.00),
        "anthropic:claude-3-5-sonnet": Price(3.00, 15.00),
        "anthropic:claude-3-7-sonnet": Price(3.00, 15.00),
        "anthropic:claude-sonnet-4": Price(3.00, 15.00),
        "anthropic:claude-opus-4": Price(15.00, 75.00),
    }
)

FREE_PROVIDERS = frozenset({"local", "vllm", "fake", "replay"})

# Dated snapshots and aliases share their family's price: gpt-4o-2024-08-06,
# claude-sonnet-4-20250514, claude-3-5-haiku-latest, claude-sonnet-4-0.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest|0)$")


def _as_price(key: str, value: Price | Mapping[str, float]) -> Price:
    if isinstance(value, Price):
        return value
    try:
        return Price(float(value["input_per_mtok"]), float(value["output_per_mtok"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"price for {key!r} needs numbers 'input_per_mtok' and 'output_per_mtok', got {value!r}"
        ) from exc


class PriceTable:
    """Looks up the price of ``provider:model`` and turns usage into dollars."""

    def __init__(self, overrides: Mapping[str, Price | Mapping[str, float]] | None = None) -> None:
        table = dict(DEFAULT_PRICES)
        for key, value in (overrides or {}).items():
            if ":" not in key:
                raise ConfigError(f"price keys look like 'provider:model', got {key!r}")
            table[key] = _as_price(key, value)
        self._table = table

    def price(self, provider: str, model: str) -> Price | None:
        """The price of a model, or None when it is free or unknown."""
        if provider in FREE_PROVIDERS:
            return None
        exact = self._table.get(f"{provider}:{model}")
        if exact is not None:
            return exact
        return self._table.get(f"{provider}:{_SNAPSHOT_SUFFIX.sub('', model)}")

    def known(self, provider: str, model: str) -> bool:
        """True when the cost of this model is known (free providers included)."""
        return provider in FREE_PROVIDERS or self.price(provider, model) is not None

    def cost(self, provider: str, model: str, usage: Usage) -> float:
        """Dollars for ``usage`` tokens of this model; 0 when free or unknown."""
        price = self.price(provider, model)
        return price.cost(usage) if price is not None else 0.0

"""How reports write numbers: one format for a score, shared by the terminal and the page."""

from __future__ import annotations

__all__ = ["score_text"]


def score_text(value: float | None) -> str:
    """A score to three decimals, or ``-`` where there is none."""
    return "-" if value is None else f"{value:.3f}"

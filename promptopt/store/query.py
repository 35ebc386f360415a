"""The one way the run store's readers filter a table: equality on the columns given."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["select_where"]


def select_where(
    table: str, order: str, equals: Mapping[str, object | None]
) -> tuple[str, list[str]]:
    """``SELECT *`` from ``table`` where each column in ``equals`` whose value is not None
    equals it, ordered by ``order``; the SQL and its parameters (names are the caller's own
    constants, values are always parameters)."""
    kept = [(column, str(value)) for column, value in equals.items() if value is not None]
    where = "".join(f" AND {column} = ?" for column, _ in kept)
    return f"SELECT * FROM {table} WHERE 1 = 1{where} ORDER BY {order}", [v for _, v in kept]

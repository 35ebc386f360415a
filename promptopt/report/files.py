"""Writing a rendered page or drawing to its file, with the one error a user sees if it fails."""

from __future__ import annotations

from pathlib import Path

from promptopt.errors import StoreError

__all__ = ["write_text"]


def write_text(target: Path, text: str, *, what: str) -> Path:
    """Write ``text`` to ``target`` (its folder made if missing); StoreError naming ``what``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write {what} {str(target)!r}: {exc}") from exc
    return target

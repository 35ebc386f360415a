"""Where a peer's run crashed, for its result file (both peer scripts import this; it
needs nothing outside the standard library, so it runs in the peers' venv too)."""

from __future__ import annotations

import traceback


def frames(exc: BaseException, keep: int = 40) -> str:
    """Where ``exc`` was raised: its traceback's last ``keep`` frames, one line each (file,
    line, function), without the error's message, which the result keeps apart: a parse
    error quotes the model's whole reply, which would bury the frames."""
    return "\n".join(
        f"{f.filename}:{f.lineno} in {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)[-keep:]
    )

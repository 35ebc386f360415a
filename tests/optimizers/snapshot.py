"""Snapshot checks for rendered meta-prompts: a prompt change shows up as a reviewable diff.

``UPDATE_SNAPSHOTS=1`` rewrites the snapshot files instead of comparing.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

FOLDER = Path(__file__).parent / "snapshots"


def check_snapshot(name: str, text: str) -> None:
    """Fail with a unified diff when ``text`` differs from ``snapshots/<name>``."""
    path = FOLDER / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), text.splitlines(keepends=True),
                "snapshot", "rendered",
            )
        )  # fmt: skip
        pytest.fail(f"the meta-prompt changed (rerun with UPDATE_SNAPSHOTS=1 if meant):\n{diff}")

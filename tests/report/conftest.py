"""The report tests reuse the optimizer tests' triage fixture and scripted OptoPrime replies."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optimizers"))

from triage_fixture import triage_task  # noqa: E402

__all__ = ["triage_task"]

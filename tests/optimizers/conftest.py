"""Fixtures of the optimizer tests (defined in triage_fixture.py)."""

from triage_fixture import triage_task

__all__ = ["triage_task"]

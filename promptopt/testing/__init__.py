"""Test helpers that ship with promptopt: loopback OpenAI and Anthropic servers with fault
injection, and a launcher for the real llama.cpp server running SmolLM2.

The servers import ``aiohttp`` (a dev dependency) and the launcher needs
``promptopt[local]``; import the submodules you need.
"""

from __future__ import annotations

from promptopt.testing.faults import FaultPlan

__all__ = ["FaultPlan"]

"""Test helpers that ship with promptopt: the conformance kits for plugins
(:func:`check_optimizer`, :func:`check_backend`), loopback OpenAI and Anthropic
servers with fault injection, and a launcher for the real llama.cpp server
running SmolLM2.

The servers import ``aiohttp`` (a dev dependency) and the launcher needs
``promptopt[local]``; import the submodules you need.
"""

from __future__ import annotations

from promptopt.testing.conformance import check_backend, check_optimizer
from promptopt.testing.faults import FaultPlan

__all__ = ["FaultPlan", "check_backend", "check_optimizer"]

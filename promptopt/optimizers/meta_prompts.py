"""Meta-prompts as data: the template files under ``templates/``, read in named parts.

A template file ``templates/<name>.txt`` holds parts, each headed by a line
``==== <part> ====``; :func:`template_parts` returns them as
:class:`string.Template` objects (``$placeholder``), read once per process. A
plugin keeps its own templates in its own package the same way and passes
``package=`` (its package with a ``templates/`` folder).
:func:`optimizer_request` makes the request of a system part and a filled user part.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from string import Template
from typing import Any

from promptopt.llm.types import LLMRequest, Message

__all__ = ["optimizer_request", "template_parts"]

_PART = re.compile(r"^==== (\w+) ====\n", re.MULTILINE)


@cache
def template_parts(name: str, package: str = "promptopt.optimizers") -> dict[str, Template]:
    """The parts of ``templates/<name>.txt`` in ``package`` (promptopt's by default), by name."""
    text = files(package).joinpath(f"templates/{name}.txt").read_text("utf-8")
    pieces = _PART.split(text)
    return {part: Template(body) for part, body in zip(pieces[1::2], pieces[2::2], strict=True)}


def optimizer_request(system: Template, user: str, **fields: Any) -> LLMRequest:
    """The request of the ``system`` part (as written) and the ``user`` text, both stripped;
    ``fields`` are its other fields (``temperature``, ``max_tokens``, ...; ``tag``
    "optimizer" unless given)."""
    return LLMRequest(
        messages=(Message("system", system.template.strip()), Message("user", user.strip())),
        **{"tag": "optimizer", **fields},
    )

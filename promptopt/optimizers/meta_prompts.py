"""Meta-prompt templates: the parts of a file under ``promptopt/optimizers/templates/``.

A template file is cut into parts by header lines ``==== <part> ====``; each part
is a :class:`string.Template` filled with ``$name`` placeholders. Keeping the
prompts as files makes every change to them a reviewable diff.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from string import Template

__all__ = ["template_parts"]

_PART = re.compile(r"^==== (\w+) ====\n", re.MULTILINE)


@cache
def template_parts(name: str) -> dict[str, Template]:
    """The parts of ``templates/<name>.txt`` by part name."""
    text = files("promptopt.optimizers").joinpath(f"templates/{name}.txt").read_text("utf-8")
    pieces = _PART.split(text)
    return {part: Template(body) for part, body in zip(pieces[1::2], pieces[2::2], strict=True)}

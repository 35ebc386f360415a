"""The names promptopt exports are exactly the ones the README promises."""

from __future__ import annotations

import re
from pathlib import Path

import promptopt

README = Path(__file__).resolve().parents[1] / "README.md"


def test_exports_match_the_readme():
    block = re.search(r"<!-- public-api -->(.*?)<!-- /public-api -->", README.read_text(), re.S)
    assert block is not None
    promised = set(re.findall(r"`([A-Za-z_]+)`", block.group(1)))
    assert promised == set(promptopt.__all__)
    for name in promptopt.__all__:
        assert getattr(promptopt, name) is not None

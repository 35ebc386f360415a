"""The one placeholder parser: strict for task files, tolerant for texts an optimizer rewrites."""

from __future__ import annotations

import pytest

from promptopt.task.placeholders import placeholders, template_fields


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Review: {text}\nAnswer {{in json}}:", ["text"]),
        ("{a} {b} {a}", ["a", "b"]),
        ('Reply with {"label": "x"} and } alone, for {text}', ["text"]),
        ("{x:>5} {y!r} {0} {}", []),
        (None, []),
        (3, []),
    ],
)
def test_placeholders_never_raise_and_count_plain_names(text, names):
    assert placeholders(text) == names


def test_template_fields_reads_as_str_format_does():
    assert template_fields("{x!r} {y:>5} {{z}}") == ("x", "y")
    for bad in ("{x", "x}", "{a.b}", "{x!}"):
        with pytest.raises(ValueError):
            template_fields(bad)

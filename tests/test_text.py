"""The one home of truncation: ``shorten`` fits a limit, ``clip`` keeps one and says what it cut."""

from __future__ import annotations

from promptopt.text import clip, one_line, shorten


def test_shorten_fits_the_limit_marker_included():
    assert shorten("abcdef", 6) == "abcdef"
    assert shorten("abcdefg", 6) == "abcde…"
    assert shorten("abcdefg", 6, marker="...") == "abc..."
    assert len(shorten("x" * 500, 40)) == 40


def test_clip_keeps_the_limit_and_says_how_much_was_cut():
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefgh", 6) == "abcdef ... [2 more chars]"
    assert clip("abcdefgh", 6, marker="... [{total} chars]") == "abcdef... [8 chars]"


def test_one_line():
    assert one_line("  a\n\tb  c ") == "a b c"

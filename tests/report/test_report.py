"""The HTML report and ``promptopt show``: built from a scripted run, opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from promptopt.api import aoptimize
from promptopt.cli import main
from promptopt.llm.fakes import FakeBackend, ScriptedBackend
from promptopt.report.facts import RunFacts
from promptopt.report.html import render_report
from promptopt.store import RunStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def run_dir(triage_task) -> Path:
    """A scripted OptoPrime run on the triage workflow: a code change, then an instruction."""
    import asyncio

    from test_optoprime_workflow import REPLIES
    from triage_fixture import triage_model

    result = asyncio.run(
        aoptimize(
            triage_task(optimizer="optoprime", config={"steps": 2}),
            backends={"task": FakeBackend(triage_model), "optimizer": ScriptedBackend(REPLIES)},
        )
    )
    return Path(result.run_dir)


def test_the_facts_match_the_store(run_dir: Path) -> None:
    with RunStore.open(run_dir) as store:
        facts = RunFacts.load(store)
        candidates = store.candidates()
        test_rows = store.evaluations(candidate_id=facts.best_id, split="test")
    assert [c.id for c in facts.candidates] == [c["id"] for c in candidates]
    assert facts.seed is not None and facts.best is not None and facts.best_id != facts.seed_id
    assert facts.best.val == 1.0 and facts.best.test == 1.0 and facts.test_rows == len(test_rows)
    calls = [c.calls_by_then for c in facts.candidates if c.val is not None]
    assert calls == sorted(calls) and calls[0] > 0  # spending only grows
    seed_rows = {r["example_id"]: r["score"] for r in store_rows(run_dir, facts.seed_id)}
    best_rows = {r["example_id"]: r["score"] for r in test_rows}
    differing = sorted(k for k in best_rows if best_rows[k] != seed_rows.get(k))
    assert sorted(e.example_id for e in facts.examples) == differing
    assert all(e.won == (best_rows[e.example_id] > seed_rows[e.example_id]) for e in facts.examples)
    optimizer_rows = [c for c in facts.costs if c.tag == "optimizer"]
    assert [c.paid for c in optimizer_rows] == [3]


def store_rows(run_dir: Path, candidate_id: str | None) -> list[dict]:
    with RunStore.open(run_dir) as store:
        return store.evaluations(candidate_id=candidate_id, split="test")


def test_the_page_holds_every_section(run_dir: Path) -> None:
    with RunStore.open(run_dir) as store:
        page = render_report(store)
    for section in ("plot-calls", "plot-cost", "tree", "diff", "examples", "graph", "costs"):
        assert f'id="{section}"' in page, section
    assert page.count("<svg") >= 4  # two curves, the tree, the workflow graph
    assert 'class="diff"' in page and "diff_add" in page  # the code and instruction changed
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)  # nothing fetched
    assert "<script" not in page


def test_cli_report_and_show(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_dir / "r.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    assert out.is_file() and capsys.readouterr().out.strip() == str(out)
    assert main(["show", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert "validation" in shown and "1.000" in shown and "route.code (changed)" in shown


def ink_rows(png: Path) -> tuple[int, int, int]:
    """(width, height, rows holding a dark pixel) of a screenshot."""
    from PIL import Image

    with Image.open(png) as image:
        grey = image.convert("L")
        width, height = grey.size
        pixels = grey.load()
        inked = sum(1 for y in range(height) if any(pixels[x, y] < 200 for x in range(0, width, 2)))
    return width, height, inked


@pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",  # CI installs it: never skipped there
    reason="Debian's chromium package is not installed",
)
def test_chromium_draws_the_plots_the_tree_and_the_diff(run_dir: Path, tmp_path: Path) -> None:
    with RunStore.open(run_dir) as store:
        page = render_report(store)
    sections = {
        "curves": re.search(r'<div class="plots">.*?</div>', page, re.S).group(0),
        "tree": re.search(r'<section id="tree">.*?</section>', page, re.S).group(0),
        "diff": re.search(r'<section id="diff">.*?</section>', page, re.S).group(0),
    }
    head = page[: page.index("<body>")]
    for name, body in sections.items():  # each part on its own page: present and not empty
        html = tmp_path / f"{name}.html"
        html.write_text(f"{head}<body>{body}</body></html>", encoding="utf-8")
        shot = tmp_path / f"{name}.png"
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--screenshot={shot}", "--window-size=1100,900", html.as_uri()],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        width, height, inked = ink_rows(shot)
        assert (width, height) == (1100, 900)
        assert inked > 150, (name, inked)  # a drawn plot, tree or diff, not a blank page
    empty = tmp_path / "empty.html"
    empty.write_text(f"{head}<body></body></html>", encoding="utf-8")
    blank = tmp_path / "empty.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={blank}",
                    "--window-size=1100,900", empty.as_uri()], capture_output=True, timeout=120,
                   check=True)  # fmt: skip
    assert ink_rows(blank)[2] == 0  # the check can fail: a blank page has no ink
    assert json.dumps(sections["diff"]).count("diff_add") >= 1

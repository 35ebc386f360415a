"""The command line: one clear line and exit code 2 for every malformed task file; the other commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptopt.cli import main

MALFORMED = sorted((Path(__file__).parent / "task" / "malformed").glob("*.yaml"))


def _field(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    return (
        first.removeprefix("# field:").split(" - ")[0].strip()
        if first.startswith("# field:")
        else ""
    )


def test_there_are_at_least_twelve_malformed_files():
    assert len(MALFORMED) >= 12


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_malformed_task_gives_one_line_naming_file_and_field(path, capsys):
    assert main(["optimize", str(path)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith(f"promptopt: error: {path}")
    assert _field(path) in lines[0]
    assert "Traceback" not in out.err and out.out == ""


@pytest.mark.parametrize("name", ["metric_kind", "yaml_syntax", "split_too_large"])
def test_a_real_process_exits_2_without_a_traceback(name):
    path = Path(__file__).parent / "task" / "malformed" / f"{name}.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "promptopt.cli", "optimize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_schema_is_json_and_matches_the_shipped_file(capsys):
    assert main(["schema", "--own"]) == 0  # the shipped file lists promptopt's own plugins
    schema = json.loads(capsys.readouterr().out)
    assert "program" in schema["properties"]
    shipped = Path(__file__).resolve().parents[1] / "task.schema.json"
    assert json.loads(shipped.read_text()) == schema, (
        "regenerate: promptopt schema --own > task.schema.json"
    )


def test_dry_run_spends_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the task's output folder, traces/, is relative to here
    task = Path(__file__).resolve().parents[1] / "tasks" / "reviews" / "task.yaml"
    assert main(["optimize", str(task), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "optimization calls" in out and "test calls" in out
    assert not (tmp_path / "traces").exists()


def test_the_readme_composition_on_reviews_shows_each_stage_share(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = Path(__file__).resolve().parents[1] / "tasks" / "reviews" / "composed.yaml"
    assert main(["optimize", str(task), "--dry-run", "--no-probe"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    # the seed's 40 validation calls leave 691 of 731: OPRO plans 656, the exemplar stage 560
    assert "stage 1: opro share 372 calls; 3 steps: 164 + 164 + 41 calls" in out
    assert "stage 2: exemplars share 319 calls; 2 steps: 160 + 120 calls" in out
    assert not (tmp_path / "traces").exists()


def test_runs_lists_nothing_in_an_empty_folder(tmp_path, capsys):
    assert main(["runs", "--output", str(tmp_path)]) == 0
    assert "no runs" in capsys.readouterr().out


def test_the_progress_rate_reads_as_evaluations_per_second() -> None:
    from promptopt.progress import _rate

    assert _rate(None) == "" and _rate(0.0) == ""
    assert _rate(2.345) == "2.3 evals/s"

"""Tests of listing runs and resolving a run id or path."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from promptopt.errors import StoreError
from promptopt.llm.types import LLMRequest, LLMResponse, messages
from promptopt.store import MIGRATIONS, RUN_FILE, RunInfo, RunStore, list_runs, resolve_run
from promptopt.store.migrations import applied_versions


class Call:
    def __init__(self, text: str, *, cached: bool = False) -> None:
        self.request = LLMRequest(messages=messages(("user", text)))
        self.key, self.provider, self.model = self.request.key(), "fake", "m"
        self.response, self.error, self.cached = LLMResponse(text=text), None, cached
        self.attempts, self.started_at, self.duration_s = 1, 0.0, 0.0


def make(out: Path, run_id: str, *, name: str = "t") -> RunStore:
    store = RunStore.create(out, task={"name": name}, run_id=run_id)
    time.sleep(0.005)  # created_at has millisecond resolution
    return store


def test_no_runs(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "missing") == []
    assert list_runs(tmp_path) == []


def test_list_runs_newest_first_with_details(tmp_path: Path) -> None:
    with make(tmp_path, "zzz-old", name="first") as old:
        old.record_llm_call(Call("a"))
        old.record_llm_call(Call("b"))
        old.record_llm_call(Call("a", cached=True))
        old.checkpoint(step=1, state={"best_score": 0.25})
        old.checkpoint(step=2, state={"best_val": 0.75, "best_id": "c"})  # the engine's key
        old.set_status("finished")
    make(tmp_path, "aaa-new", name="second").close()
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == ["aaa-new", "zzz-old"]
    new, old_info = runs
    assert isinstance(new, RunInfo)
    assert (new.task_name, new.status, new.calls, new.best_score) == ("second", "running", 0, None)
    assert (old_info.task_name, old_info.status, old_info.calls, old_info.best_score) == (
        "first", "finished", 2, 0.75,
    )  # fmt: skip
    assert old_info.path == (tmp_path / "zzz-old").resolve()
    assert old_info.created_at < new.created_at


def test_list_runs_shows_unreadable_and_does_not_migrate(tmp_path: Path) -> None:
    newer = [*MIGRATIONS, (MIGRATIONS[-1][0] + 1, "CREATE TABLE later (x INTEGER);")]
    RunStore.create(tmp_path, task={"name": "t"}, run_id="from-future", migrations=newer).close()
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="live") as live:
        junk = tmp_path / "junk"
        junk.mkdir()
        (junk / RUN_FILE).write_bytes(b"garbage" * 200)
        by_id = {r.run_id: r for r in list_runs(tmp_path)}
        assert by_id["junk"].status == "unreadable"
        assert by_id["from-future"].status == "running"
        assert by_id["live"].status == "running"
        live.set_status("failed", detail="boom")  # the open store is still writable
    with contextlib.closing(sqlite3.connect(tmp_path / "from-future" / RUN_FILE)) as conn:
        assert applied_versions(conn) == [v for v, _ in newer]  # listing did not touch it


def test_resolve_run_by_id_path_file_prefix_and_latest(tmp_path: Path) -> None:
    out = tmp_path / "traces"
    make(out, "20260101-000000-t-abcd").close()
    make(out, "20260102-000000-t-ef01").close()
    first = (out / "20260101-000000-t-abcd").resolve()
    second = (out / "20260102-000000-t-ef01").resolve()
    assert resolve_run("20260101-000000-t-abcd", output_dir=out) == first
    assert resolve_run(out / "20260101-000000-t-abcd") == first
    assert resolve_run(str(out / "20260101-000000-t-abcd" / RUN_FILE)) == first
    assert resolve_run("20260102", output_dir=out) == second
    assert resolve_run("latest", output_dir=out) == second


def test_resolve_run_errors_are_clear(tmp_path: Path) -> None:
    out = tmp_path / "traces"
    with pytest.raises(StoreError, match=r"no run 'nope'.*holds no runs"):
        resolve_run("nope", output_dir=out)
    make(out, "2026-a").close()
    make(out, "2026-b").close()
    with pytest.raises(StoreError, match=r"no run 'nope'.*recent runs: 2026-b, 2026-a"):
        resolve_run("nope", output_dir=out)
    with pytest.raises(StoreError, match=r"prefix '2026' is ambiguous.*2026-a, 2026-b"):
        resolve_run("2026", output_dir=out)
    with pytest.raises(StoreError, match=r"no run 'other/2026-a'"):
        resolve_run("other/2026-a", output_dir=out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"'.*empty' is not a run"):
        resolve_run(tmp_path / "empty", output_dir=out)


def test_open_by_id_and_path_reach_the_same_run(tmp_path: Path) -> None:
    with make(tmp_path, "r1") as s:
        s.add_decision(step=0, kind="seed", payload={})
    with (
        RunStore.open("r1", output_dir=tmp_path) as by_id,
        RunStore.open(tmp_path / "r1") as by_path,
    ):
        assert by_id.root == by_path.root
        assert by_id.run_id == "r1"
        assert by_id.decisions() == by_path.decisions()

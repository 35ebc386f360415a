"""Tests of RunStore: round trips, resume lookups, append-only rows, crash safety."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import promptopt.store as store_pkg
from promptopt.errors import ConfigError, StoreError
from promptopt.llm.types import LLMRequest, LLMResponse, Usage, messages
from promptopt.store import MIGRATIONS, RUN_FILE, RunStore

REPO = Path(__file__).resolve().parents[2]
TASK = {"name": "sentiment", "model": "openai:gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}


@dataclass
class Event:
    """The fields of the LLM layer's CallEvent."""

    key: str
    provider: str
    model: str
    request: LLMRequest
    response: LLMResponse | None
    error: str | None = None
    cached: bool = False
    attempts: int = 1
    started_at: float = 1000.0
    duration_s: float = 0.25
    budgeted: bool = True


def event(text: str | None, *, prompt: str = "hi", cached: bool = False, error: str | None = None,
          tokens: tuple[int, int] = (3, 2), cost: float = 0.001, budgeted: bool = True,
          ) -> Event:  # fmt: skip
    request = LLMRequest(messages=messages(("user", prompt)), model="m", tag="judge")
    response = None
    if text is not None:
        response = LLMResponse(text=text, usage=Usage(*tokens), model="m", cost_usd=cost)
    return Event(request.key(namespace="fake"), "fake", "m", request, response, error, cached,
                 budgeted=budgeted)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    with RunStore.create(tmp_path / "traces", task=TASK, task_path="task.yaml") as s:
        yield s


def test_public_names() -> None:
    assert set(store_pkg.__all__) == {
        "MIGRATIONS", "RUN_FILE", "SCHEMA_VERSION", "STATUSES", "RunInfo", "RunLock", "RunStore",
        "list_runs", "resolve_run",
    }  # fmt: skip


def test_create_writes_meta_and_default_run_id(store: RunStore, tmp_path: Path) -> None:
    assert store.root == (tmp_path / "traces" / store.run_id).resolve()
    assert (store.root / RUN_FILE).is_file()
    date, clock, name, suffix = store.run_id.split("-")
    assert (len(date), len(clock), name, len(suffix)) == (8, 6, "sentiment", 4)
    int(suffix, 16)
    meta = store.meta()
    assert meta["task"] == TASK
    assert meta["task_path"] == "task.yaml"
    assert meta["task_name"] == "sentiment"
    assert meta["created_at"].endswith("Z")
    assert "promptopt_version" in meta
    assert meta["status"] == store.status() == "running"


def test_create_refuses_existing_run_and_bad_ids(tmp_path: Path) -> None:
    RunStore.create(tmp_path, task=TASK, run_id="r1").close()
    with pytest.raises(StoreError, match="'r1' already exists"):
        RunStore.create(tmp_path, task=TASK, run_id="r1")
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ConfigError, match="run id"):
            RunStore.create(tmp_path, task=TASK, run_id=bad)


def test_task_name_is_slugged_into_run_id(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, task={"name": "my task/v2 ü"}) as s:
        assert "-my-task-v2-" in s.run_id
        assert s.root.parent == tmp_path.resolve()


def test_pragmas(store: RunStore) -> None:
    conn = store._db()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_llm_call_round_trip(store: RunStore) -> None:
    ev = event("positive")
    store.record_llm_call(ev)
    [row] = store.llm_calls()
    assert row["key"] == ev.key
    assert row["request"] == ev.request.canonical()
    assert row["tag"] == "judge"
    assert row["cached"] is False
    assert LLMResponse.from_dict(row["response"]) == ev.response
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (3, 2, 0.001)


def test_recorded_response_is_first_successful_backend_answer(store: RunStore) -> None:
    assert store.recorded_response(event("x").key) is None
    store.record_llm_call(event(None, error="ServerError: 503"))
    assert store.recorded_response(event("x").key) is None
    store.record_llm_call(event("first"))
    store.record_llm_call(event("replayed", cached=True))
    store.record_llm_call(event("second"))
    answer = store.recorded_response(event("x").key)
    assert answer is not None
    assert (answer.text, answer.cached, answer.usage) == ("first", True, Usage(3, 2))
    assert store.recorded_response(event("x", prompt="other").key) is None


def test_cached_replay_never_overwrites(store: RunStore) -> None:
    store.record_llm_call(event("cached-from-disk", cached=True))
    assert store.recorded_response(event("x").key) is None
    store.record_llm_call(event("real"))
    assert store.recorded_response(event("x").key).text == "real"
    assert [c["cached"] for c in store.llm_calls()] == [True, False]


def test_budget_spent_counts_paid_budgeted_calls_only(store: RunStore) -> None:
    assert store.budget_spent() == {"calls": 0, "tokens": 0, "usd": 0.0}
    store.record_llm_call(event("a", prompt="1", tokens=(3, 2), cost=0.25))
    store.record_llm_call(event("b", prompt="2", tokens=(1, 1), cost=0.5))
    store.record_llm_call(event("a", prompt="1", cached=True))  # a replay is not paid again
    store.record_llm_call(event(None, prompt="3", error="ServerError: 500"))  # nothing billed
    store.record_llm_call(event("t", prompt="4", budgeted=False))  # test scoring: off budget
    assert store.budget_spent() == {"calls": 2, "tokens": 7, "usd": 0.75}
    assert store.answered_keys(budgeted=True) == {event("", prompt=p).key for p in "12"}
    assert store.answered_keys() == {event("", prompt=p).key for p in "124"}


def test_calls_recorded_before_the_budgeted_column_count(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, task=TASK, run_id="old", migrations=MIGRATIONS[:2]) as old:
        old._db().execute(
            "INSERT INTO llm_calls (key, request, response, prompt_tokens) VALUES ('k', '{}', '{}', 4)"
        )
    with RunStore.open(tmp_path / "old") as store:  # migrated: an unknown role counts
        assert store.budget_spent() == {"calls": 1, "tokens": 4, "usd": 0.0}


def test_recorded_response_after_reopen(store: RunStore, tmp_path: Path) -> None:
    keys = []
    for i in range(50):
        ev = event(f"answer {i}", prompt=f"q{i}")
        store.record_llm_call(ev)
        keys.append(ev.key)
    store.close()
    with RunStore.open(store.run_id, output_dir=tmp_path / "traces") as again:
        assert [again.recorded_response(k).text for k in keys] == [f"answer {i}" for i in range(50)]


def test_secrets_are_scrubbed(tmp_path: Path) -> None:
    task = {
        "name": "t",
        "api_key": "sk-live-123",
        "backend": {"headers": {"Authorization": "Bearer sk"}},
    }
    with RunStore.create(tmp_path, task=task) as s:
        ev = event("ok")
        ev.request = {"messages": [], "api_key": "sk-x", "headers": {"x-api-key": "sk-y"}}
        s.record_llm_call(ev)
        text = b"".join(f.read_bytes() for f in s.root.iterdir())
        meta = s.meta()
    assert b"sentiment" in text or b"messages" in text  # the bytes really hold the rows
    assert b"sk-live-123" not in text and b"sk-x" not in text and b"sk-y" not in text
    assert meta["task"]["api_key"] == "[redacted]"
    assert meta["task"]["backend"]["headers"]["Authorization"] == "[redacted]"


def test_candidate_round_trip_and_idempotent(store: RunStore) -> None:
    params = {"instruction": "Classify.", "exemplars": [{"text": "good", "label": "pos"}]}
    store.add_candidate("c0", params, parent_id=None, step=0, origin="seed")
    store.add_candidate("c1", {"instruction": "Be brief."}, parent_id="c0", step=1, origin="mcts",
                        meta={"reason": "errors on negation"})  # fmt: skip
    store.add_candidate("c0", params, parent_id=None, step=0, origin="seed")  # resume
    rows = store.candidates()
    assert [r["id"] for r in rows] == ["c0", "c1"]
    assert rows[0]["params"] == params
    assert rows[1]["parent_id"] == "c0" and rows[1]["meta"] == {"reason": "errors on negation"}
    with pytest.raises(StoreError, match="'c0' is already recorded with other params"):
        store.add_candidate("c0", {"instruction": "other"}, parent_id=None, step=0, origin="seed")
    with pytest.raises(StoreError, match="parent 'nope'"):
        store.add_candidate("c2", params, parent_id="nope", step=2, origin="mcts")
    assert len(store.candidates()) == 2


def test_evaluations_round_trip_and_filters(store: RunStore) -> None:
    store.add_candidate("c0", {"p": "a"}, parent_id=None, step=0, origin="seed")
    store.add_candidate("c1", {"p": "b"}, parent_id="c0", step=1, origin="x")
    store.add_evaluation(candidate_id="c0", split="train", example_id="e1", inputs={"text": "hi"},
                         target="pos", output="pos", score=1.0, valid=True, request_key="k1")  # fmt: skip
    rows = [
        dict(candidate_id=cid, split=split, example_id=f"e{i}", inputs={"i": i}, target=[i],
             output=None, score=0.0, valid=False, feedback="wrong", error="boom")
        for cid in ("c0", "c1") for split in ("train", "val") for i in range(2, 4)
    ]  # fmt: skip
    store.add_evaluations(rows)
    assert len(store.evaluations()) == 9
    assert len(store.evaluations(candidate_id="c1")) == 4
    assert len(store.evaluations(candidate_id="c0", split="train")) == 3
    first = store.evaluations(candidate_id="c0", split="train")[0]
    assert first["inputs"] == {"text": "hi"} and first["target"] == "pos"
    assert (first["valid"], first["score"], first["request_key"]) == (True, 1.0, "k1")
    last = store.evaluations()[-1]
    assert (last["target"], last["output"], last["valid"], last["error"]) == (
        [3],
        None,
        False,
        "boom",
    )


def test_evaluations_keep_first_on_resume_and_refuse_unknown_candidate(store: RunStore) -> None:
    store.add_candidate("c0", {"p": "a"}, parent_id=None, step=0, origin="seed")
    row = dict(candidate_id="c0", split="val", example_id="e1", inputs={}, target=None,
               output="a", score=0.5, valid=True)  # fmt: skip
    store.add_evaluations([row])
    store.add_evaluations([row | {"score": 0.9}])
    assert [e["score"] for e in store.evaluations()] == [0.5]
    with pytest.raises(StoreError, match="not recorded: \\['ghost'\\]"):
        store.add_evaluations([row | {"candidate_id": "ghost"}, row | {"example_id": "e2"}])
    assert len(store.evaluations()) == 1  # the failed batch left nothing behind


def test_decisions_checkpoints_status(store: RunStore) -> None:
    assert store.latest_checkpoint() is None
    store.add_decision(step=1, kind="accept", payload={"candidate": "c1", "score": 0.7})
    store.checkpoint(step=1, state={"best": "c1", "best_score": 0.7})
    store.checkpoint(step=2, state={"best": "c2", "best_score": 0.8, "rng": [3, [1, 2]]})
    assert store.latest_checkpoint() == (2, {"best": "c2", "best_score": 0.8, "rng": [3, [1, 2]]})
    assert store.decisions()[0]["payload"] == {"candidate": "c1", "score": 0.7}
    store.set_status("interrupted", detail="KeyboardInterrupt")
    store.set_status("running", detail="resumed")
    store.set_status("finished")
    assert store.status() == "finished"
    assert [e["status"] for e in store.status_events()] == [
        "running", "interrupted", "running", "finished",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="'done'"):
        store.set_status("done")


def test_proposal_links_are_idempotent_append_only_and_name_known_candidates(
    store: RunStore,
) -> None:
    store.add_candidate("c0", {"p": "a"}, parent_id=None, step=0, origin="seed")
    store.add_candidate("c1", {"p": "b"}, parent_id="c0", step=1, origin="optoprime")
    store.add_proposal(candidate_id="c1", call_key="k1", step=1)
    store.add_proposal(candidate_id="c1", call_key="k1", step=1)  # a resumed run: no new row
    assert [(p["candidate_id"], p["call_key"], p["step"]) for p in store.proposals()] == [
        ("c1", "k1", 1)
    ]
    with pytest.raises(StoreError, match="'nobody'"):
        store.add_proposal(candidate_id="nobody", call_key="k2", step=1)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db().execute("DELETE FROM proposals")


def test_summary(store: RunStore) -> None:
    store.record_llm_call(event("a", prompt="1", tokens=(10, 5), cost=0.01))
    store.record_llm_call(event("b", prompt="2", tokens=(20, 5), cost=0.02))
    store.record_llm_call(event("a", prompt="1", tokens=(10, 5), cost=0.01, cached=True))
    store.record_llm_call(event(None, prompt="3", error="timeout"))
    store.add_candidate("c0", {"p": "a"}, parent_id=None, step=0, origin="seed")
    store.add_evaluation(candidate_id="c0", split="val", example_id="1", inputs={}, target=1,
                         output="1", score=1, valid=True)  # fmt: skip
    store.checkpoint(step=4, state={})
    summary = store.summary()
    assert summary == summary | {
        "llm_calls": 4, "backend_calls": 3, "cached_calls": 1, "failed_calls": 1,
        "prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40,
        "candidates": 1, "evaluations": 1, "decisions": 0, "last_step": 4, "status": "running",
    }  # fmt: skip
    assert summary["cost_usd"] == pytest.approx(0.03)


def test_rows_are_append_only(store: RunStore) -> None:
    store.add_candidate("c0", {"p": "a"}, parent_id=None, step=0, origin="seed")
    store.record_llm_call(event("a"))
    conn = store._db()
    for sql in ("UPDATE candidates SET origin = 'x'", "DELETE FROM llm_calls",
                "UPDATE status_events SET status = 'finished'", "DELETE FROM meta"):  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    assert store.candidates()[0]["origin"] == "seed"


def test_unserializable_value_is_a_store_error(store: RunStore) -> None:
    with pytest.raises(StoreError, match="'params'"):
        store.add_candidate("c0", {"p": object()}, parent_id=None, step=0, origin="seed")


def test_closed_store_refuses(store: RunStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.status()


def test_concurrent_writers_from_threads(store: RunStore) -> None:
    def work(n: int) -> None:
        for i in range(25):
            store.record_llm_call(event(f"{n}-{i}", prompt=f"{n}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.summary()["llm_calls"] == 200


def test_open_unknown_run_and_non_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run 'nope'"):
        RunStore.open("nope", output_dir=tmp_path)
    bad = tmp_path / "junk"
    bad.mkdir()
    (bad / RUN_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a readable run store"):
        RunStore.open(bad)


_CRASH = """
import os, signal, sys
from promptopt.store import RunStore
from promptopt.llm.types import LLMRequest, LLMResponse, messages
class E:
    def __init__(self, i):
        self.request = LLMRequest(messages=messages(("user", f"q{i}")))
        self.key, self.provider, self.model = self.request.key(), "fake", "m"
        self.response, self.error, self.cached = LLMResponse(text=f"a{i}"), None, False
        self.attempts, self.started_at, self.duration_s = 1, 0.0, 0.1
s = RunStore.create(sys.argv[1], task={"name": "crash"}, run_id="crashed")
s.add_candidate("c0", {"p": "x"}, parent_id=None, step=0, origin="seed")
for i in range(20):
    s.record_llm_call(E(i))
s.checkpoint(step=3, state={"best_score": 0.5})
s.add_evaluations([dict(candidate_id="c0", split="val", example_id=str(i), inputs={}, target=i,
                        output=None, score=0.0, valid=False) for i in range(5)])
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
os._exit(3)
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_killed_writer_loses_nothing(tmp_path: Path, how: str) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path), how], env=env, timeout=60)
    assert proc.returncode != 0
    with RunStore.open(tmp_path / "crashed") as s:
        summary = s.summary()
        assert (summary["llm_calls"], summary["candidates"], summary["evaluations"]) == (20, 1, 5)
        assert s.latest_checkpoint() == (3, {"best_score": 0.5})
        assert s.recorded_response(LLMRequest(messages=messages(("user", "q7"))).key()).text == "a7"
        assert s.status() == "running"


_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(),
                       st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
_PARAM = st.one_of(
    st.text(), st.lists(st.dictionaries(st.text(max_size=8), _JSON_LEAF), max_size=4)
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=st.dictionaries(st.text(min_size=1, max_size=10), _PARAM, max_size=4))
def test_candidate_params_round_trip_is_identity(tmp_path: Path, params: dict[str, Any]) -> None:
    with RunStore.create(tmp_path, task={"name": "prop"}, run_id=uuid.uuid4().hex) as s:
        s.add_candidate("c", params, parent_id=None, step=0, origin="seed")
        assert s.candidates()[0]["params"] == params
        assert json.loads(json.dumps(params)) == params

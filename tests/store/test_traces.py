"""Traces in the run store: schema migration, filters, feedback appends, refusals."""

from __future__ import annotations

import sqlite3

import pytest

from promptopt.errors import StoreError
from promptopt.graph import Feedback, node, param, trace
from promptopt.store import MIGRATIONS, RunStore


@node
def echo(text):
    return text + "!"


def _trace(text: str):
    p = param(text, name="p")
    with trace(name="echo", meta={"n": 1}) as t:
        echo(p.value)
    return t


def test_filters_feedback_and_listing(tmp_path):
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="r1") as store:
        first, second = _trace("ab"), _trace("cd")
        store.add_trace(first, candidate_id=None, split="val", example_id="0")
        store.add_trace(second, split="train", example_id=1)
        assert [t.id for t in store.traces()] == [first.id, second.id]
        assert [t.id for t in store.traces(split="train", example_id=1)] == [second.id]
        store.add_trace_feedback(first.id, Feedback(output=1, kind="text", value="too short"))
        assert store.trace(first.id).feedback == [
            Feedback(output=1, kind="text", value="too short")
        ]
        assert store.trace_rows()[0] | {"id": ""} == {
            "id": "", "name": "echo", "candidate_id": None, "split": "val", "example_id": "0",
            "nodes": 2,
        }  # fmt: skip
        with pytest.raises(StoreError, match="already stored"):
            store.add_trace(first)
        with pytest.raises(StoreError, match="not stored"):
            store.trace("nope")


def test_an_old_store_gains_the_trace_tables(tmp_path):
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="old", migrations=MIGRATIONS[:1]):
        pass
    with RunStore.open(tmp_path / "old") as store:
        store.add_trace(_trace("xy"))
        assert len(store.traces()) == 1


def test_trace_rows_are_append_only(tmp_path):
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="r") as store:
        store.add_trace(_trace("ab"))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"), store._write() as conn:
            conn.execute("UPDATE trace_nodes SET name = 'x'")

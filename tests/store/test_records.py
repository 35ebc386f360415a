"""Optimizers' own records in the run store: ordered, written once, append-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from promptopt.errors import StoreError
from promptopt.store import RunStore


def test_records_are_kept_in_order_and_a_replay_writes_nothing(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="r") as store:
        assert store.add_optimizer_record(seq=0, optimizer="mcts", step=1, kind="node",
                                          payload={"node": 0, "reward": 0.5})  # fmt: skip
        assert store.add_optimizer_record(seq=1, optimizer="mcts", step=1, kind="backup",
                                          payload={"path": [0]})  # fmt: skip
        # the resumed run makes the same record again: not stored twice
        assert not store.add_optimizer_record(seq=0, optimizer="mcts", step=1, kind="node",
                                              payload={"reward": 0.5, "node": 0})  # fmt: skip
        rows = store.optimizer_records()
        assert [(r["seq"], r["kind"], r["payload"]) for r in rows] == [
            (0, "node", {"node": 0, "reward": 0.5}),
            (1, "backup", {"path": [0]}),
        ]
        assert [r["seq"] for r in store.optimizer_records(kind="backup")] == [1]
        assert store.optimizer_records(optimizer="opro") == []


def test_a_diverging_replay_is_refused(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="r") as store:
        store.add_optimizer_record(seq=0, optimizer="mcts", step=1, kind="node", payload={"a": 1})
        with pytest.raises(StoreError, match="diverged"):
            store.add_optimizer_record(
                seq=0, optimizer="mcts", step=1, kind="node", payload={"a": 2}
            )


def test_records_cannot_be_changed(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, task={"name": "t"}, run_id="r") as store:
        store.add_optimizer_record(seq=0, optimizer="mcts", step=1, kind="node", payload={})
    conn = sqlite3.connect(tmp_path / "r" / "run.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE optimizer_records SET kind = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM optimizer_records")
    conn.close()

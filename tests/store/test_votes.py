"""Pairwise judge votes in the run store: recorded once, read back, append-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from promptopt.optimizers.base import Verdict, Vote
from promptopt.store import RunStore


def test_votes_are_recorded_once_and_read_back(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, task={"name": "t"}) as store:
        for cid in ("old", "new"):
            store.add_candidate(cid, {"system": cid}, parent_id=None, step=0, origin="test")
        votes = (Vote(0, swapped=False, choice="B", reply="B", request_key="k0"),
                 Vote(1, swapped=True, choice="B", reply="B", request_key="k1"))  # fmt: skip
        verdict = Verdict("old", "new", votes)
        store.add_votes(verdict, step=3)
        store.add_votes(verdict, step=3)  # a resumed run replays the comparison
        rows = store.votes()
        assert [(r["vote"], r["swapped"], r["choice"], r["challenger_won"]) for r in rows] == [
            (0, False, "B", True), (1, True, "B", False)]  # fmt: skip
        assert {(r["step"], r["incumbent_id"], r["challenger_id"]) for r in rows} == {
            (3, "old", "new")}  # fmt: skip
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store._db().execute("UPDATE pairwise_votes SET choice = 'A'")

"""An optimizer's own records in the run store: ``RunStore.add_optimizer_record`` and
``RunStore.optimizer_records``.

An optimizer keeps what the common tables cannot hold (MCTS: each node of its
tree, each backup's Q and N) as ordered ``(kind, payload)`` rows. The engine
numbers them in the order the optimizer makes them (``seq``). A resumed run
replays the search and makes the same records again: a row whose ``seq`` is
already stored with the same content is not written twice, and one with other
content means the resumed run diverged from the recorded one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from promptopt.errors import StoreError
from promptopt.store.jsoncol import json_text
from promptopt.store.query import select_where

__all__ = ["OptimizerRecordsMixin"]


class OptimizerRecordsMixin:
    """The optimizer-record methods of :class:`~promptopt.store.RunStore`."""

    def add_optimizer_record(
        self, *, seq: int, optimizer: str, step: int, kind: str, payload: Mapping[str, Any]
    ) -> bool:
        """Record one optimizer record; returns False when ``seq`` was stored already (a replay)."""
        encoded = json_text(dict(payload), what=f"{optimizer} record")
        with self._write() as conn:  # type: ignore[attr-defined]
            row = conn.execute(
                "SELECT optimizer, kind, payload FROM optimizer_records WHERE seq = ?", (int(seq),)
            ).fetchone()
            if row is not None:
                if (row[0], row[1], json.loads(row[2])) != (optimizer, kind, json.loads(encoded)):
                    raise StoreError(
                        f"optimizer record {seq} is already stored as a {row[1]!r} record of "
                        f"{row[0]!r} with other content; the resumed run diverged from the "
                        f"recorded one"
                    )
                return False
            conn.execute(
                "INSERT INTO optimizer_records (seq, optimizer, step, kind, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (int(seq), optimizer, int(step), kind, encoded, time.time()),
            )
        return True

    def optimizer_records(
        self, *, optimizer: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """The records in order, optionally of one optimizer and/or kind, ``payload`` decoded."""
        sql, params = select_where(
            "optimizer_records", "seq", {"optimizer": optimizer, "kind": kind}
        )
        rows = self._rows(sql, params)  # type: ignore[attr-defined]
        return [{**dict(row), "payload": json.loads(row["payload"])} for row in rows]

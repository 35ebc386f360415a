"""Reading run stores for export: read-only, streamed, each level sorted by its group key.

A :class:`RunSource` is one ``run.sqlite`` opened without migrating or writing it.
Its four streams yield ``(group, item)`` in ascending group order, so the streams
of several runs merge into one sorted stream (:func:`merged`) and a group is read,
mined and forgotten before the next one, whatever the size of the runs:

- :func:`output_items`: every evaluation whose output came from one recorded task
  request (the engine records its key), grouped by task and input;
- :func:`trace_items`: every stored trace with its evaluation's score and its LLM
  calls in order, grouped by task and input (the same groups as outputs);
- :func:`optimizer_items`: every optimizer reply that proposed a candidate, scored
  by that candidate's mean validation score, grouped by the exact meta-prompt;
- :func:`judge_items`: every judged comparison (``pairwise_votes``, SPO) with both
  candidates' answers to one validation input and the votes each side won,
  grouped by task and input.

A request is looked up by key (:meth:`RunSource.call`): the exact messages the
model was sent, the model, and the reply text, from the ``llm_calls`` table.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from promptopt.errors import StoreError
from promptopt.export.mining import Item, Judgment, TraceItem
from promptopt.store.runs import RUN_FILE, read_only, resolve_run

__all__ = [
    "RecordedCall",
    "RunSource",
    "find_runs",
    "grouped",
    "judge_items",
    "keep_run",
    "merged",
    "optimizer_items",
    "output_items",
    "trace_items",
    "unlinked",
]

_CACHED_CALLS = 4096  # request lookups kept per run (the pairs of a few groups)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One recorded request: its exact messages, the model that answered, the reply."""

    messages: tuple[tuple[str, str], ...]
    model: str
    text: str

    def chat(self) -> list[dict[str, str]]:
        """The messages as chat turns ``{"role", "content"}``."""
        return [{"role": role, "content": content} for role, content in self.messages]


class RunSource:
    """One run store, read only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self.conn = read_only(root / RUN_FILE)
            meta = {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}
            self.tables = {
                row[0]
                for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"cannot read run store {str(root)!r}: {exc}") from exc
        self.run_id = str(meta.get("run_id") or root.name)
        self.task = str(meta.get("task_name") or "")
        self._calls: dict[str, RecordedCall | None] = {}

    def close(self) -> None:
        self.conn.close()

    def call(self, key: str) -> RecordedCall | None:
        """The request recorded under ``key`` with its first answer, or None."""
        if key in self._calls:
            return self._calls[key]
        if len(self._calls) >= _CACHED_CALLS:
            self._calls.clear()
        sql = ("SELECT provider, model, request, response FROM llm_calls"
               " WHERE key = ? AND response IS NOT NULL {} ORDER BY id LIMIT 1")  # fmt: skip
        # a backend answer first (the partial index of older stores finds it), else a cache hit
        row = (self.conn.execute(sql.format("AND cached = 0"), (key,)).fetchone()
               or self.conn.execute(sql.format(""), (key,)).fetchone())  # fmt: skip
        found = None
        if row is not None:
            request, response = json.loads(row[2]), json.loads(row[3])
            found = RecordedCall(
                messages=tuple((str(role), str(content)) for role, content in request["messages"]),
                model=f"{row[0]}:{row[1]}" if row[0] else str(row[1]),
                text=str(response.get("text") or ""),
            )
        self._calls[key] = found
        return found

    def text_of(self, key: str) -> str | None:
        found = self.call(key)
        return None if found is None else found.text


def find_runs(runs: Sequence[str | Path], *, output_dir: Path | str = "traces") -> list[Path]:
    """Run folders for run ids, prefixes, folders, ``latest``, or runs folders (every run
    below them); sorted by path, each once."""
    found: set[Path] = set()
    for run in runs:
        folder = Path(run)
        if folder.is_dir() and not (folder / RUN_FILE).is_file():
            inside = {child.resolve() for child in folder.iterdir() if (child / RUN_FILE).is_file()}
            if inside:
                found |= inside
                continue
        found.add(resolve_run(run, output_dir=output_dir))
    return sorted(found)


def keep_run(source: RunSource, *, runs: Sequence[str], tasks: Sequence[str]) -> bool:
    """Whether the run filters (id globs, task names) keep ``source``."""
    if runs and not any(fnmatch.fnmatchcase(source.run_id, pattern) for pattern in runs):
        return False
    return not tasks or source.task in tasks


def _group(task: str, inputs: str) -> str:
    return f"{task}\x00{inputs}"


def output_items(source: RunSource) -> Iterator[tuple[str, Item]]:
    """Scored outputs with their request, sorted by group (task, input)."""
    rows = source.conn.execute(
        "SELECT inputs, candidate_id, split, example_id, output, score, request_key"
        " FROM evaluations WHERE output IS NOT NULL AND error IS NULL"
        " AND request_key IS NOT NULL ORDER BY inputs, candidate_id, split, example_id"
    )
    for inputs, candidate, split, example, output, score, key in rows:
        item = Item(source=source, run=source.run_id, candidate=candidate, score=float(score),
                    completion=output, prompt_key=key, split=split, example=example)  # fmt: skip
        yield _group(source.task, inputs), item


def unlinked(source: RunSource) -> int:
    """Scored outputs that name no single request (no output-level pairs from them)."""
    row = source.conn.execute(
        "SELECT count(*) FROM evaluations"
        " WHERE output IS NOT NULL AND error IS NULL AND request_key IS NULL"
    ).fetchone()
    return int(row[0])


def trace_items(source: RunSource) -> Iterator[tuple[str, TraceItem]]:
    """Stored traces with their evaluation's score and LLM calls, sorted by group."""
    if "traces" not in source.tables:
        return
    rows = source.conn.execute(
        "SELECT e.inputs, t.id, t.candidate_id, t.split, t.example_id, e.score FROM traces t"
        " JOIN evaluations e ON e.candidate_id = t.candidate_id AND e.split = t.split"
        " AND e.example_id = t.example_id ORDER BY e.inputs, t.candidate_id, t.split,"
        " t.example_id, t.id"
    )
    for inputs, trace_id, candidate, split, example, score in rows:
        item = TraceItem(source=source, run=source.run_id, trace=trace_id, candidate=candidate,
                         split=split, example=example, score=float(score),
                         steps=_llm_steps(source, trace_id))  # fmt: skip
        if item.steps:
            yield _group(source.task, inputs), item


def _llm_steps(source: RunSource, trace_id: str) -> tuple[tuple[tuple[str, int], str], ...]:
    """A trace's answered LLM calls in order: ``((node, occurrence), key)``."""
    steps: list[tuple[tuple[str, int], str]] = []
    seen: dict[str, int] = {}
    for name, data in source.conn.execute(
        "SELECT name, data FROM trace_nodes WHERE trace_id = ? AND kind = 'op' ORDER BY idx",
        (trace_id,),
    ):
        for call in json.loads(data).get("llm_calls") or ():
            if isinstance(call, dict) and call.get("key") and not call.get("error"):
                seen[name] = seen.get(name, 0) + 1
                steps.append(((name, seen[name]), str(call["key"])))
    return tuple(steps)


def optimizer_items(source: RunSource) -> Iterator[tuple[str, Item]]:
    """Optimizer replies that proposed a scored candidate, sorted by meta-prompt."""
    if "proposals" not in source.tables:
        return
    rows = source.conn.execute(
        "SELECT p.call_key, p.candidate_id, coalesce(c.parent_id, ''),"
        " (SELECT avg(e.score) FROM evaluations e"
        "  WHERE e.candidate_id = p.candidate_id AND e.split = 'val')"
        " FROM proposals p JOIN candidates c ON c.id = p.candidate_id ORDER BY p.id"
    ).fetchall()
    found = []
    for key, candidate, parent, score in rows:
        call = source.call(key)
        if call is None or score is None:
            continue
        group = json.dumps(call.messages, ensure_ascii=False)
        item = Item(source=source, run=source.run_id, candidate=candidate, score=float(score),
                    completion=call.text, prompt_key=key, split="val", parent=parent)  # fmt: skip
        found.append((group, item))
    found.sort(key=lambda pair: (pair[0], pair[1].order()))
    yield from found


_JUDGED = """
SELECT i.inputs, v.incumbent_id, v.challenger_id, v.n, v.incumbent_won, v.challenger_won,
       i.example_id, i.output, i.request_key, c.output, c.request_key
FROM (SELECT incumbent_id, challenger_id, count(*) AS n,
             total(choice != '' AND challenger_won = 0) AS incumbent_won,
             total(challenger_won) AS challenger_won
      FROM pairwise_votes GROUP BY incumbent_id, challenger_id) v
JOIN evaluations i ON i.candidate_id = v.incumbent_id AND i.split = 'val'
JOIN evaluations c ON c.candidate_id = v.challenger_id AND c.split = 'val'
     AND c.example_id = i.example_id
WHERE i.output IS NOT NULL AND i.error IS NULL AND i.request_key IS NOT NULL
  AND c.output IS NOT NULL AND c.error IS NULL AND c.request_key IS NOT NULL
ORDER BY i.inputs, v.incumbent_id, v.challenger_id, i.example_id
"""


def judge_items(source: RunSource) -> Iterator[tuple[str, Judgment]]:
    """Judged comparisons on each validation input both sides answered, sorted by group."""
    if "pairwise_votes" not in source.tables:
        return
    for inputs, old, new, n, old_won, new_won, example, *answers in source.conn.execute(_JUDGED):
        sides = [
            Item(source=source, run=source.run_id, candidate=candidate, score=won / n,
                 completion=output, prompt_key=key, split="val", example=example)
            for candidate, won, (output, key) in
            ((old, old_won, answers[:2]), (new, new_won, answers[2:]))
        ]  # fmt: skip
        judgment = Judgment(sides[0], sides[1], wins=(int(old_won), int(new_won)), votes=int(n))
        yield _group(source.task, inputs), judgment


def merged(streams: Iterable[Iterator[tuple[str, Any]]]) -> Iterator[tuple[str, Any]]:
    """One stream sorted by group from streams that each are."""
    streams = list(streams)
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda pair: pair[0])


def grouped(stream: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, list[Any]]]:
    """``(group, items)`` for each run of equal groups."""
    for group, pairs in groupby(stream, key=lambda pair: pair[0]):
        yield group, [item for _, item in pairs]

"""``benchmarks/peers/gepa_library.py``'s adapter: the ``gepa`` library's evaluations go
through promptopt's engine (its rendering, ``choices`` and response cache), and the
reflective dataset shows each example's input, output and feedback.

(The library itself lives in the peers' venv, never in promptopt's: ``gepa.optimize``
is exercised by running the benchmark; here its ``EvaluationBatch`` is stood in for.)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from promptopt.aio import LoopThread
from promptopt.llm.fakes import FakeBackend
from promptopt.session import build_parts
from promptopt.store import RunStore
from promptopt.task.loader import load_task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import crash  # noqa: E402
import gepa_library  # noqa: E402
from quality_tasks import TASKS  # noqa: E402


@dataclass
class Batch:  # the fields of gepa's EvaluationBatch that the adapter fills
    outputs: list
    scores: list
    trajectories: list | None = None


def _task_file(tmp_path: Path) -> Path:
    rows = [{"text": f"a {w} film {i}", "label": {"good": "positive", "bad": "negative"}[w]}
            for i, w in enumerate(["good", "bad"] * 10)]  # fmt: skip
    data = tmp_path / "sst2"
    data.mkdir()
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = TASKS["sst2"].write_data(data, tmp_path / "split", val=6, test=6)
    spec = TASKS["sst2"].spec("gepa", paths=paths, max_calls=50, cache=tmp_path / "cache",
                              models={"task": "local:smollm2", "optimizer": "local:smollm2"},
                              output=tmp_path / "traces")  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_the_adapter_scores_through_the_engine_and_shows_feedback(tmp_path) -> None:
    seen: list[str] = []

    def task(request) -> str:  # "positive" whatever the review, unless told to say negative
        seen.append(request.messages[0].content)
        return "negative" if "negative" in request.messages[0].content.split(":")[0] else "positive"

    spec = load_task(_task_file(tmp_path))
    store = RunStore.create(tmp_path / "traces", task=spec.model_dump(mode="json"))
    parts = build_parts(spec, store=store, backends={"task": FakeBackend(task)})
    loop = LoopThread()
    try:
        adapter = gepa_library.Adapter(parts.engine(store), dict(parts.program.seed_params()),
                                       loop, Batch)  # fmt: skip
        batch = list(parts.splits.val[:4])
        got = adapter.evaluate(batch, {"system": "Say it"}, capture_traces=True)
        assert got.outputs == ["positive"] * 4 and got.scores == [1.0, 0.0, 1.0, 0.0]
        assert seen == ["Say it"] * 4  # the candidate's text is the system message
        wrong = got.trajectories[1]
        assert wrong["inputs"] == {"text": batch[1].inputs["text"]}
        assert "'positive'" in wrong["feedback"] and "'negative'" in wrong["feedback"]
        again = adapter.evaluate(batch, {"system": "Say it"})
        assert again.scores == got.scores and again.trajectories is None
        assert len(seen) == 4  # the response cache answered: no second backend call
        data = adapter.make_reflective_dataset({"system": "Say it"}, got, ["system"])
        assert [r["Generated Outputs"] for r in data["system"]] == ["positive"] * 4
        assert data["system"][1]["Feedback"] == wrong["feedback"]
        stop = gepa_library.ReflectionStop(parts.task_llm, 4)
        assert stop(None)
        assert not gepa_library.ReflectionStop(parts.task_llm, 5)(None)
    finally:
        loop.run(parts.aclose())
        loop.close()
        store.close()


def test_a_crash_keeps_where_it_was_raised_and_not_the_long_message_again() -> None:
    def inner() -> None:
        raise ValueError("the reply: " + "x" * 10_000)

    try:
        inner()
    except ValueError as exc:
        where = crash.frames(exc)
    lines = where.splitlines()
    assert lines[-1].endswith(" in inner") and "test_gepa_library_adapter.py:" in lines[-1]
    assert "xxx" not in where and len(lines) == 2

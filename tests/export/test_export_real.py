"""Preference export from short real SmolLM2 runs of the shipped ``reviews`` and ``triage``
tasks: the files load with ``datasets``, and every pair is checked against the stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptopt.api import aoptimize
from promptopt.export import ExportOptions, export_preferences
from promptopt.store import RunStore

TASKS = Path(__file__).resolve().parents[2] / "tasks"
MARGIN = 0.5


def small_task(tmp_path: Path, name: str, *, split: dict[str, int], config: dict[str, Any]) -> Path:
    root = tmp_path / "tasks"
    shutil.copytree(TASKS / name, root / name)
    if name == "triage":
        shutil.copytree(TASKS / "tickets", root / "tickets")
    path = root / name / "task.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["data"]["split"] = {**split, "seed": 0}
    spec["optimizer"]["config"] = config
    spec["cache"] = {"policy": "off"}
    spec["budget"] = {"max_calls": 400}
    spec["output"] = str(tmp_path / "runs")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def messages(call: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in call["request"]["messages"]]


class Stores:
    """The runs' rows, by run id, for checking pairs."""

    def __init__(self, run_dirs: list[Path]) -> None:
        self.evaluations: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.calls: dict[tuple[str, str], dict[str, Any]] = {}
        self.traces: dict[tuple[str, str], Any] = {}
        for folder in run_dirs:
            with RunStore.open(folder) as store:
                run = store.run_id
                for e in store.evaluations():
                    self.evaluations[run, e["candidate_id"], e["split"], e["example_id"]] = e
                for c in store.llm_calls():
                    self.calls.setdefault((run, c["key"]), c)
                for t in store.traces():
                    self.traces[run, t.id] = t

    def evaluation(self, side: dict[str, Any]) -> dict[str, Any]:
        return self.evaluations[side["run"], side["candidate"], side["split"], side["example"]]

    def node_call(self, side: dict[str, Any], node: str, text: str) -> dict[str, Any]:
        """The call of ``node`` in the side's trace that answered ``text``."""
        trace = self.traces[side["run"], side["trace"]]
        calls = [self.calls[side["run"], c["key"]] for n in trace.nodes if n.name == node
                 for c in n.llm_calls]  # fmt: skip
        (found,) = [c for c in calls if c["response"]["text"] == text][:1]
        return found


@pytest.mark.real
@pytest.mark.timeout(900)  # about 80 model calls: a minute or two, more on a busy machine
async def test_pairs_from_real_smollm2_runs_hold_against_the_stores(tmp_path: Path) -> None:
    import datasets

    reviews = await aoptimize(small_task(
        tmp_path, "reviews", split={"train": 8, "val": 10, "test": 2},
        config={"k": 1, "num_sets": 2, "mutations": 1, "per_step": 2},
    ))  # fmt: skip
    triage = await aoptimize(small_task(
        tmp_path, "triage", split={"train": 6, "val": 6, "test": 2},
        config={"k": 2, "num_sets": 2, "mutations": 1, "per_step": 2},
    ))  # fmt: skip
    runs = [reviews.run_dir, triage.run_dir]
    out = tmp_path / "out"
    for fmt in ("trl", "kto", "listwise"):
        report = export_preferences(
            [str(r) for r in runs], out / f"{fmt}.jsonl",
            options=ExportOptions(format=fmt, margin=MARGIN, test_fraction=0.25),
        )  # fmt: skip
        assert report.rows["train"] > 0, fmt
        for path, count in ((report.train_path, report.rows["train"]),
                            (report.test_path, report.rows["test"])):  # fmt: skip
            if count:  # (datasets cannot load an empty file: a few inputs may all be train)
                loaded = datasets.load_dataset("json", data_files=path, split="train",
                                               cache_dir=str(tmp_path / "hf"))  # fmt: skip
                assert len(loaded) == count
    pairs = [json.loads(line) for name in ("trl.jsonl", "trl.test.jsonl")
             for line in (out / name).read_text(encoding="utf-8").splitlines()]  # fmt: skip
    levels = [p["metadata"]["level"] for p in pairs]
    assert levels.count("output") > 0 and levels.count("node") > 0, levels
    stores = Stores(runs)
    for pair in pairs:
        meta = pair["metadata"]
        chosen, rejected = meta["chosen"], meta["rejected"]
        good, bad = stores.evaluation(chosen), stores.evaluation(rejected)
        # the chosen side scored higher than the rejected one by at least the margin
        assert good["score"] == chosen["score"] and bad["score"] == rejected["score"]
        assert good["score"] - bad["score"] >= MARGIN
        said, other = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert said != other
        if meta["level"] == "output":
            # the prompt is the exact messages of the rejected output's request
            assert pair["prompt"] == messages(stores.calls[rejected["run"], bad["request_key"]])
            assert (good["output"], bad["output"]) == (said, other)
            sent = messages(stores.calls[chosen["run"], good["request_key"]])
        else:
            # the node's exact input messages, and its replies in both traces
            worse = stores.node_call(rejected, meta["node"], other)
            assert pair["prompt"] == messages(worse)
            sent = messages(stores.node_call(chosen, meta["node"], said))
        assert meta["same_prompt"] == (sent == pair["prompt"])

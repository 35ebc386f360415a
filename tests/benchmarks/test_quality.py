"""``benchmarks/quality.py`` end to end on fakes: every run on both tasks, the tables and the last line.

Tiny generated data (the real rows are in ../shared/data, which a new checkout lacks),
a fake task model that answers from a keyword, and a fake optimizer model that
answers every request shape (rewrites, JSON replies, votes) with a numbered text.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from promptopt.llm.fakes import FakeBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import quality  # noqa: E402

WORDS = {"good": "positive", "bad": "negative", "Who": "human", "How many": "number"}


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _data(tmp_path: Path) -> tuple[Path, Path]:
    sst2 = [{"text": f"a {w} film number {i}", "label": WORDS[w]}
            for i, w in zip(range(60), itertools.cycle(["good", "bad"]), strict=False)]  # fmt: skip
    trec = [{"question": f"{w} thing {i} ?", "label": WORDS[w], "fine_label": "x"}
            for i, w in zip(range(60), itertools.cycle(["Who", "How many"]), strict=False)]  # fmt: skip
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        _write(tmp_path / "sst2", name, sst2)
    for name in ("train.jsonl", "test.jsonl"):
        _write(tmp_path / "trec", name, trec * 3)
    return tmp_path / "sst2", tmp_path / "trec"


def _task(request) -> str:
    text = request.messages[-1].content
    for word, label in WORDS.items():
        if word in text and label in request.choices:
            return label
    return request.choices[0]


def _optimizer(counter: itertools.count):
    def answer(request) -> str:
        n = next(counter)
        if request.max_tokens and request.max_tokens <= 8:
            return "A"  # a judge's vote
        text = f"Answer with one label, version {n}."
        return json.dumps({"analysis": "a", "modification": "m", "prompt": text,
                           "reasoning": "r", "answer": "", "suggestion": {"system": text},
                           "text": f"<START>{text}<END>"})  # fmt: skip

    return answer


def fake_backends():
    """Fresh fake backends for each run; the optimizer's texts numbered across the runs."""
    counter = itertools.count()

    def backends():
        optimizer = FakeBackend(_optimizer(counter))
        return {"task": FakeBackend(_task), "optimizer": optimizer, "judge": optimizer}

    return backends


def test_every_run_prints_tables_and_the_json_line(tmp_path, capsys):
    sst2, trec = _data(tmp_path)
    backends = fake_backends()
    final = quality.main(
        ["--jobs", "1", "--val", "6", "--test-rows", "10", "--max-calls", "120",
         "--sst2-data", str(sst2), "--trec-data", str(trec),
         "--workdir", str(tmp_path / "work")],
        backends=backends,
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == final
    for task in ("sst2", "trec"):
        assert set(final[task]) >= {"best_test_acc", "best_optimizer", "seed_test_acc", "calls"}
        assert set(final[task]["runs"]) == set(quality.RUNS)
        for run in final[task]["runs"].values():
            assert run["calls"] <= 120 and run["optimizer_calls"] <= quality.MAX_OPTIMIZER_CALLS
    assert isinstance(final["min_gain_over_seed"], float)
    assert set(final["gain_over_seed"]) == set(quality.RATED)
    text = "\n".join(out)
    assert "SST-2:" in text and "TREC coarse classes:" in text
    assert "DSPy BootstrapFewShotWithRandomSearch (best peer) (BASELINES.md)" in text
    assert "promptopt opro+exemplars" in text and "always 'positive' (no model)" in text


def test_a_missing_data_folder_stops_before_any_model_loads(tmp_path):
    _, trec = _data(tmp_path)
    with pytest.raises(SystemExit, match=r"sst2: no train.jsonl, dev.jsonl, test.jsonl in .*nope"):
        quality.parse_args(["--sst2-data", str(tmp_path / "nope"), "--trec-data", str(trec)])
    args = quality.parse_args(["--task", "trec", "--sst2-data", str(tmp_path / "nope"),
                               "--trec-data", str(trec)])  # fmt: skip
    assert args.tasks == ["trec"]

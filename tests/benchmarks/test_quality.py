"""``benchmarks/quality.py`` end to end on fakes: every run on both tasks, the tables and the last line.

Tiny generated data (the real rows are in ../shared/data, which a new checkout lacks),
a fake task model that answers from a keyword, and a fake optimizer model that
answers every request shape (rewrites, JSON replies, votes) with a numbered text.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptopt.llm.fakes import FakeBackend
from promptopt.stats import mcnemar_exact

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import quality  # noqa: E402
import saved_runs  # noqa: E402
from quality_tasks import RATED_QWEN  # noqa: E402

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


def fake_peers(seen: list[list[str]]):
    """A peer runner: every peer scores 0.5 on test with 700 task calls, MIPROv2 crashes."""

    def run(command: list[str], log: Path):
        seen.append(command)
        args = dict(zip(command[2::2], command[3::2], strict=False))
        peer = args.get("--peer", "gepa_library")
        if peer == "dspy_miprov2":
            return subprocess.CompletedProcess(command, 1, "", "Traceback\nAdapterParseError: x")
        Path(args["--out"]).write_text(json.dumps({
            "peer": peer, "best_val": 0.6, "test_acc": 0.5, "unparseable": 0, "task_calls": 700,
            "optimizer_calls": 9, "wall_s": 3.0, "instruction": "Label it.", "error": None,
            "test_scores": [1.0, 0.0] * 5}))  # fmt: skip
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_every_run_and_peer_in_both_settings_prints_tables_and_the_json_line(tmp_path, capsys):
    sst2, trec = _data(tmp_path)
    backends = fake_backends()
    seen: list[list[str]] = []
    final = quality.main(
        ["--jobs", "1", "--val", "6", "--test-rows", "10", "--max-calls", "120",
         "--sst2-data", str(sst2), "--trec-data", str(trec),
         "--workdir", str(tmp_path / "work")],
        backends=backends, peer_runner=fake_peers(seen),
    )  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert json.loads(out[-1]) == final
    verdicts = [line for line in out if "beats every peer" in line or "no run of" in line]
    assert len(verdicts) == 4  # one under each table with peers
    # a line on stderr as each run ends, before any table
    ended = [line for line in captured.err.splitlines() if line.startswith("finished ")]
    assert len(ended) == 2 * 2 * len(quality.RUNS)
    assert any(line.startswith("finished trec opro+exemplars: best test ") for line in ended)
    for part, rated in ((final, quality.RATED), (final["qwen"], RATED_QWEN)):
        for task in ("sst2", "trec"):
            assert set(part[task]) >= {"best_test_acc", "best_optimizer", "seed_test_acc", "calls"}
            assert set(part[task]["runs"]) == set(quality.RUNS)
            for run in part[task]["runs"].values():
                assert run["calls"] <= 120
                assert run["optimizer_calls"] <= quality.MAX_OPTIMIZER_CALLS
            assert part[task]["peers"] == {"dspy_gepa": 0.5, "dspy_miprov2": None,
                                           "gepa_library": 0.5}  # fmt: skip
            assert part[task]["errors"] == {"dspy_miprov2": "no result: AdapterParseError: x"}
            best = part[task]["best_test_acc"]
            assert part[task]["beats_peers"] == (best >= 0.52)  # every peer spent 700 calls
            winner = part[task]["beats_peers_with"]
            assert (
                winner is None if best < 0.52 else part[task]["runs"][winner]["best_test"] == best
            )
            # the peers got rows 0, 2, 4, ... right: the paired counts differ by the gain
            for name in ("dspy_gepa", "gepa_library"):
                versus = part[task]["versus_peers"][name]
                assert versus["wins"] - versus["losses"] == round(10 * (best - 0.5))
                assert versus["p"] == round(mcnemar_exact(versus["wins"], versus["losses"]), 4)
            assert "dspy_miprov2" not in part[task]["versus_peers"]  # it crashed
            gepa = part[task]["runs"]["gepa"]["best_test"]
            assert part[task]["gepa_minus_library"] == round(gepa - 0.5, 4)
        assert isinstance(part["min_gain_over_seed"], float)
        assert set(part["gain_over_seed"]) == set(rated)
    # 3 peers x 2 tasks x 2 settings; the gepa library runs on promptopt's own python
    assert len(seen) == 12
    library = [c for c in seen if c[1].endswith("gepa_library.py")]
    assert len(library) == 4 and all(c[0] == sys.executable for c in library)
    text = "\n".join(out)
    assert text.count("SST-2:") == 2 and "local:qwen2.5-coder-1.5b task model" in text
    assert "promptopt opro+exemplars" in text and "always 'positive' (no model)" in text
    assert "peer dspy_miprov2" in text and "crashed" in text and "BASELINES.md" not in text
    assert text.count("against peer gepa_library on test:") == 4


def test_the_qwen_setting_starts_sst2_from_the_labels_alone(tmp_path):
    sst2, trec = _data(tmp_path)
    argv = ["--setting", "qwen", "--peers", "none", "--sst2-data", str(sst2), "--trec-data",
            str(trec)]  # fmt: skip
    args = quality.parse_args(argv)
    qwen = quality.for_setting(args, "qwen")
    assert (qwen.task_model, qwen.test_rows) == ("local:qwen2.5-coder-1.5b", 200)
    # SST-2's first 50 validation rows are too easy for Qwen to tell programs apart
    assert (quality.val_of(qwen, "sst2"), quality.val_of(qwen, "trec")) == (100, 50)
    assert quality.task_of(qwen, "sst2").system == "positive or negative"
    assert quality.task_of(qwen, "trec").system == quality.TASKS["trec"].system
    small = quality.for_setting(args, "smollm2")
    assert (quality.val_of(small, "sst2"), quality.val_of(small, "trec")) == (100, 100)
    given = quality.for_setting(quality.parse_args([*argv, "--val", "30"]), "qwen")
    assert (quality.val_of(given, "sst2"), quality.val_of(given, "trec")) == (30, 30)
    assert quality.task_of(small, "sst2").system == quality.TASKS["sst2"].system
    assert args.peer_list == []


def test_a_missing_data_folder_stops_before_any_model_loads(tmp_path):
    _, trec = _data(tmp_path)
    with pytest.raises(SystemExit, match=r"sst2: no train.jsonl, dev.jsonl, test.jsonl in .*nope"):
        quality.parse_args(["--sst2-data", str(tmp_path / "nope"), "--trec-data", str(trec)])
    args = quality.parse_args(["--task", "trec", "--sst2-data", str(tmp_path / "nope"),
                               "--trec-data", str(trec)])  # fmt: skip
    assert args.tasks == ["trec"]


def test_runs_in_worker_processes_come_back_in_order_and_each_is_announced() -> None:
    seen: list[int] = []
    calls = [(abs, (-3,)), (abs, (-1,)), (abs, (-2,))]
    assert quality._in_pool(2, calls, done=seen.append) == [3, 1, 2]
    assert sorted(seen) == [1, 2, 3]


def test_a_rerun_in_the_same_folder_reuses_what_finished_under_the_same_code(tmp_path, capsys):
    sst2, trec = _data(tmp_path)
    made = []  # one entry per backends() asked for: the seed's val or test, or a run
    fresh = fake_backends()

    def backends():
        made.append(1)
        return fresh()

    seen: list[list[str]] = []
    argv = ["--setting", "smollm2", "--task", "sst2", "--optimizer", "opro,exemplars",
            "--peers", "gepa_library,dspy_miprov2", "--jobs", "1", "--val", "6",
            "--test-rows", "10", "--max-calls", "120", "--sst2-data", str(sst2),
            "--trec-data", str(trec), "--workdir", str(tmp_path / "work")]  # fmt: skip
    first = quality.main(argv, backends=backends, peer_runner=fake_peers(seen))
    assert len(made) == 2 + 2 and len(seen) == 2  # the seed's 2 splits, 2 runs; 2 peers
    capsys.readouterr()

    again = quality.main(argv, backends=backends, peer_runner=fake_peers(seen))
    err = capsys.readouterr().err
    assert len(made) == 4 + 2  # only the seed is scored again (from its cache)
    assert [c[1].endswith("gepa_library.py") for c in seen[2:]] == [False]  # the crash reruns
    assert {"reused sst2 opro", "reused sst2 exemplars"} <= {
        " ".join(line.split(":")[0].split()[:3]) for line in err.splitlines()
    }
    for key in ("best_test_acc", "runs", "peers", "versus_peers"):
        assert again["sst2"][key] == first["sst2"][key]

    quality.main([*argv, "--fresh"], backends=backends, peer_runner=fake_peers(seen))
    assert len(made) == 6 + 4 and len(seen) == 3 + 2  # everything again
    quality.main([*argv, "--max-calls", "100"], backends=backends, peer_runner=fake_peers(seen))
    assert len(made) == 10 + 4 and len(seen) == 5 + 2  # another budget: another run


def test_the_code_fingerprint_follows_the_sources_and_not_the_docs(tmp_path) -> None:
    for folder in ("promptopt", "benchmarks", "benchmarks/peers/.venv"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "promptopt" / "a.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "b.py").write_text("y = 2\n")
    before = saved_runs.code_fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("docs\n")
    (tmp_path / "benchmarks" / "peers" / ".venv" / "c.py").write_text("z = 3\n")
    assert saved_runs.code_fingerprint(tmp_path) == before
    (tmp_path / "promptopt" / "a.py").write_text("x = 2\n")
    assert saved_runs.code_fingerprint(tmp_path) != before


def test_a_best_exactly_the_margin_above_a_peer_beats_it_at_no_more_calls():
    best = {"scores": {"best_test": 0.945}, "task_calls": 600}
    for peer, beaten in (({"test_acc": 0.925, "task_calls": 600}, True),  # 0.925 + 0.02 in floats
                         ({"test_acc": 0.93, "task_calls": 900}, False),
                         ({"test_acc": 0.9, "task_calls": 599}, False)):  # fmt: skip
        assert quality._versus_peers(best, [], {"p": peer})["beats_peers"] is beaten


def test_a_cheaper_run_beats_the_peers_when_the_best_on_test_cost_more_than_one():
    # TREC in the qwen setting: gepa's 0.815 took 583 calls, MIPROv2 566; the composition
    # got 0.780 with 254
    gepa = {"run": "gepa", "scores": {"best_test": 0.815}, "task_calls": 583}
    composition = {"run": "opro+exemplars", "scores": {"best_test": 0.78}, "task_calls": 254}
    near = {"run": "opro", "scores": {"best_test": 0.73}, "task_calls": 214}
    peers = {"dspy_miprov2": {"test_acc": 0.72, "task_calls": 566},
             "gepa_library": {"test_acc": 0.71, "task_calls": 708}}  # fmt: skip
    out = quality._versus_peers(gepa, [gepa, near, composition], peers)
    assert (out["beats_peers"], out["beats_peers_with"]) == (True, "opro+exemplars")
    # one run has to beat them all: one cheaper than each but short of one by the margin,
    # another by the margin but dearer, is no win
    out = quality._versus_peers(gepa, [gepa, near], peers)
    assert (out["beats_peers"], out["beats_peers_with"]) == (False, None)

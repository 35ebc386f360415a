"""``benchmarks/peers.py``'s driver on a fake peer runner: what each peer is told, where its
data comes from, and how a result and a crash reach the tables and the last line.

(The peers themselves need DSPy, which lives in the benchmark's own venv, never in
promptopt's: ``run_peer.py`` is exercised by running the benchmark.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import peers  # noqa: E402
from quality_tasks import CONFIGS  # noqa: E402


def _data(root: Path) -> Path:
    sst2 = [{"text": f"film {i}", "label": ("positive", "negative")[i % 2]} for i in range(120)]
    (root / "sst2").mkdir(parents=True)
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        (root / "sst2" / name).write_text("".join(json.dumps(r) + "\n" for r in sst2))
    return root


def fake_runner(seen: list[dict]):
    def run(command: list[str], log: Path) -> subprocess.CompletedProcess[str]:
        assert log.parent.is_dir()
        args = dict(zip(command[2::2], command[3::2], strict=False))
        args["--peer"] = args.get("--peer", Path(command[1]).stem)
        seen.append(args)
        if args["--peer"] == "dspy_miprov2":  # dies before writing a result
            return subprocess.CompletedProcess(command, 1, "", "Traceback ...\nValueError: parse")
        if args["--peer"] == "gepa_library":  # a promptopt task file
            spec = json.loads(Path(args["--task-file"]).read_text())
            args["spec"] = spec
            folder = Path(spec["data"]["train"]).parent
        else:
            folder = Path(args["--data"])
        rows = {f: len((folder / f"{f}.jsonl").read_text().splitlines())
                for f in ("train", "val", "test")}  # fmt: skip
        Path(args["--out"]).write_text(json.dumps({
            "peer": args["--peer"], "best_val": 0.5, "test_acc": 0.25, "unparseable": 3,
            "task_calls": 700, "optimizer_calls": 12, "task_tokens": 10, "optimizer_tokens": 5,
            "wall_s": 9.0, "instruction": "Say it.", "error": None, "rows": rows,
            "demos": 4 if args["--peer"] == "gepa_library" else 0,
            "resumed": 2 if args["--peer"] == "dspy_gepa" else 0,
        }))  # fmt: skip
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_each_peer_gets_the_task_the_cap_and_the_servers_and_a_crash_is_a_row(
    tmp_path, capsys
) -> None:
    seen: list[dict] = []
    code = peers.main(["--task", "sst2", "--val", "20", "--test-rows", "30", "--max-calls", "99",
                       "--data", str(_data(tmp_path))], runner=fake_runner(seen))  # fmt: skip
    assert code == 0
    assert [a["--peer"] for a in seen] == ["dspy_gepa", "dspy_miprov2", "gepa_library"]
    first = seen[0]
    assert first["--max-calls"] == "99" and first["--labels"] == "positive,negative"
    # the peers' reflection model may write as much as promptopt's gepa reflections
    gepa_tokens = CONFIGS["gepa"]["config"]["max_tokens"]
    assert first["--optimizer-tokens"] == str(gepa_tokens) == seen[2]["--max-tokens"]
    assert first["--instruction"] == peers.TASKS["sst2"].system and first["--input"] == "text"
    out = capsys.readouterr().out
    final = json.loads(out.strip().splitlines()[-1])
    gepa, mipro = final["sst2"]["dspy_gepa"], final["sst2"]["dspy_miprov2"]
    assert gepa["test_acc"] == 0.25 and gepa["rows"] == {"train": 50, "val": 20, "test": 30}
    assert mipro["test_acc"] is None and mipro["error"] == "no result: ValueError: parse"
    assert "dspy_miprov2 crashed: no result: ValueError: parse" in out
    assert "instruction: Say it.\n" in out  # no demonstrations
    assert "instruction: Say it. (+ 4 demonstrations)" in out
    assert out.count("resumed from its saved state 2 time(s)") == 1  # dspy_gepa's row only
    library = seen[2]
    assert library["--max-calls"] == "99" and library["--max-reflections"] == "40"
    assert library["spec"]["program"]["system"] == peers.TASKS["sst2"].system
    assert library["spec"]["budget"] == {"max_calls": 198}  # a safety net: gepa caps itself
    assert library["spec"]["models"]["task"] == "local:smollm2"
    assert final["sst2"]["gepa_library"]["rows"] == {"train": 50, "val": 20, "test": 30}


def test_the_qwen_setting_gives_every_peer_its_plainer_seed(tmp_path, capsys) -> None:
    seen: list[dict] = []
    peers.main(["--setting", "qwen", "--task", "sst2", "--peer", "dspy_gepa,gepa_library",
                "--data", str(_data(tmp_path))], runner=fake_runner(seen))  # fmt: skip
    plain = peers.SETTINGS["qwen"].seeds["sst2"]
    assert seen[0]["--instruction"] == plain
    assert seen[1]["spec"]["program"]["system"] == plain
    assert seen[1]["spec"]["models"]["task"] == "local:qwen2.5-coder-1.5b"
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["sst2"]["dspy_gepa"]["rows"] == {"train": 50, "val": 100, "test": 120}


def test_a_saved_result_is_reused_from_the_workdir_and_a_crash_runs_again(tmp_path, capsys):
    seen: list[dict] = []
    argv = ["--task", "sst2", "--val", "20", "--test-rows", "30", "--data",
            str(_data(tmp_path)), "--workdir", str(tmp_path / "work")]  # fmt: skip
    peers.main(argv, runner=fake_runner(seen))
    out = capsys.readouterr().out
    log = tmp_path / "work" / "sst2" / "dspy_gepa.log"
    assert f"SST-2 (smollm2): dspy_gepa ... (its output: {log})" in out
    first = json.loads(out.strip().splitlines()[-1])
    assert (tmp_path / "work" / "sst2" / "dspy_gepa.saved.json").exists()
    peers.main(argv, runner=fake_runner(seen))
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the crashed MIPROv2 is the only peer run again
    assert [a["--peer"] for a in seen] == ["dspy_gepa", "dspy_miprov2", "gepa_library",
                                          "dspy_miprov2"]  # fmt: skip
    assert again == first
    peers.main([*argv, "--fresh"], runner=fake_runner(seen))
    assert len(seen) == 7


def killed_gepa(seen: list[dict]):
    """A runner whose dspy_gepa saves a state in its ``--state`` folder and dies."""

    def run(command: list[str], log: Path) -> subprocess.CompletedProcess[str]:
        args = dict(zip(command[2::2], command[3::2], strict=False))
        seen.append(args)
        state = Path(args["--state"])
        (state / "gepa_state.bin").write_bytes(b"iteration %d" % len(seen))
        log.write_text(f"process {len(seen)}\n")
        return subprocess.CompletedProcess(command, -9, "", "Killed")

    return run


def test_a_killed_dspy_gepa_resumes_from_its_state_unless_its_data_or_fresh_say_otherwise(
    tmp_path, capsys
) -> None:
    seen: list[dict] = []
    work = tmp_path / "work"
    argv = ["--task", "sst2", "--peer", "dspy_gepa", "--val", "20", "--test-rows", "30",
            "--data", str(_data(tmp_path)), "--workdir", str(work)]  # fmt: skip
    peers.main(argv, runner=killed_gepa(seen))
    state = work / "sst2" / "dspy_gepa.state"
    assert seen[0]["--state"] == str(state)
    assert "resuming" not in capsys.readouterr().out
    # started again with the same scripts, options and data (other server ports): resumes
    peers.main(argv, runner=killed_gepa(seen))
    assert f"resuming from the state GEPA saved in {state}" in capsys.readouterr().out
    assert (state / "gepa_state.bin").read_bytes() == b"iteration 2"
    log = work / "sst2" / "dspy_gepa.log"  # the first process's log is kept beside the second's
    assert (log.read_text(), (work / "sst2" / "dspy_gepa.log.1").read_text()) == (
        "process 2\n", "process 1\n")  # fmt: skip
    # other validation rows: the state is not this run's and is removed before it starts
    peers.main([*argv[:5], "21", *argv[6:]], runner=killed_gepa(seen))
    assert "resuming" not in capsys.readouterr().out
    peers.main([*argv[:5], "21", *argv[6:]], runner=killed_gepa(seen))
    assert "resuming" in capsys.readouterr().out
    peers.main([*argv[:5], "21", *argv[6:], "--fresh"], runner=killed_gepa(seen))
    assert "resuming" not in capsys.readouterr().out
    # a different cap is a different run too
    peers.main([*argv, "--max-calls", "50"], runner=killed_gepa(seen))
    assert "resuming" not in capsys.readouterr().out
    assert [a["--max-calls"] for a in seen][-1] == "50"


def test_a_peer_process_writes_its_output_to_its_log_and_says_how_it_goes(tmp_path, capsys):
    log = tmp_path / "peer.log"
    child = (
        "import sys, time\n"
        "print('started', flush=True)\n"
        "sys.stderr.write('Iteration 1: 40%\\rIteration 1: 90%\\n'); sys.stderr.flush()\n"
        "time.sleep(1.5)\n"
        "raise SystemExit('ValueError: parse')\n"
    )
    proc = peers.subprocess_runner([sys.executable, "-c", child], log, every=0.1)
    assert proc.returncode == 1
    text = log.read_bytes().decode()
    assert text.startswith("started\nIteration 1: 40%\rIteration 1: 90%\n")  # both streams
    assert proc.stderr.strip().splitlines()[-1] == "ValueError: parse"  # a crash's last line
    progress = [line for line in capsys.readouterr().out.splitlines() if "running for" in line]
    assert progress, "no progress line while the peer ran"
    assert progress[-1].endswith("its last line: Iteration 1: 90%")
    assert peers.last_line(log) == "ValueError: parse"


def test_an_interrupted_benchmark_kills_its_peer(tmp_path, monkeypatch) -> None:
    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(peers.subprocess, "Popen", popen)
    monkeypatch.setattr(peers, "last_line", interrupt)  # the first progress line: ^C
    child = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(KeyboardInterrupt):
        peers.subprocess_runner(child, tmp_path / "peer.log", every=0.05)
    assert started[0].poll() is not None  # killed, not left running

"""Crash safety of SPO and PROMST: a run killed with SIGKILL at 10 random points, resumed each
time, ends exactly as an uninterrupted run, and the backend never answers a request twice.

Each run is a real subprocess with pure fake models (answers are functions of the request,
so every process gives the same answer to the same request). The fakes append every request
they answer to a log shared by the processes of one run; a process kills itself with SIGKILL
when the run's answers reach the next kill point, just before answering. The 10 points are
drawn with a seeded rng from the uninterrupted run's answer count.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from promst_fixture import write_yes_no_task
from spo_fixture import write_qa_task

HERE = Path(__file__).resolve().parent

DRIVER = """
import json, os, signal, sys
from pathlib import Path
sys.path.insert(0, {here!r})
from promst_fixture import promst_model, yes_no_model
from spo_fixture import judge_model, optimizer_model, task_model
from promptopt.api import optimize
from promptopt.llm.fakes import FakeBackend

task, log, kill_at, resume = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ROLES = {{
    "spo": {{"task": task_model, "optimizer": optimizer_model, "judge": judge_model}},
    "promst": {{"task": yes_no_model, "optimizer": promst_model, "judge": promst_model}},
}}[sys.argv[5]]
answered = len(log.read_text().splitlines()) if log.exists() else 0

def counted(handler):
    def answer(request):
        global answered
        if 0 <= kill_at <= answered:
            os.kill(os.getpid(), signal.SIGKILL)
        text = handler(request)
        with log.open("a") as f:
            f.write(json.dumps([request.key(), request.tag]) + "\\n")
        answered += 1
        return text
    return answer

result = optimize(task, resume=resume or None,
                  backends={{role: FakeBackend(counted(h)) for role, h in ROLES.items()}})
print(json.dumps({{"best": result.best.params, "scores": result.scores,
                  "stats": result.optimizer_stats}}))
"""

TASKS = {
    "spo": lambda folder: write_qa_task(folder, config={"rounds": 4}),
    "promst": lambda folder: write_yes_no_task(
        folder,
        {"n_children": 2, "expansions": 3, "surplus": 2, "predictor_min_pairs": 3},
    ),
}


def _run(script: Path, task: Path, log: Path, name: str, *, kill_at: int = -1, resume: str = ""):
    return subprocess.run(
        [sys.executable, str(script), str(task), str(log), str(kill_at), resume, name],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _answers(log: Path) -> Counter[str]:
    return Counter(json.loads(line)[0] for line in log.read_text().splitlines())


@pytest.mark.parametrize("name", ["spo", "promst"])
def test_killed_ten_times_and_resumed_it_ends_as_an_uninterrupted_run(name, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(here=str(HERE)))
    (tmp_path / "plain").mkdir()
    (tmp_path / "killed").mkdir()
    plain_task, killed_task = TASKS[name](tmp_path / "plain"), TASKS[name](tmp_path / "killed")

    plain_log = tmp_path / "plain.log"
    plain = _run(script, plain_task, plain_log, name)
    assert plain.returncode == 0, plain.stderr
    reference = json.loads(plain.stdout.splitlines()[-1])
    total = sum(_answers(plain_log).values())
    assert total >= 20  # room for 10 distinct kill points

    log = tmp_path / "killed.log"
    points = sorted(random.Random(7).sample(range(1, total), 10))
    run_dir = ""
    for point in points:
        killed = _run(script, killed_task, log, name, kill_at=point, resume=run_dir)
        assert killed.returncode == -9, killed.stderr  # SIGKILL, not an exit of its own
        assert sum(_answers(log).values()) == point
        run_dir = run_dir or str(next((tmp_path / "killed" / "traces").iterdir()))
    last = _run(script, killed_task, log, name, resume=run_dir)
    assert last.returncode == 0, last.stderr
    resumed = json.loads(last.stdout.splitlines()[-1])

    assert resumed["best"] == reference["best"]
    assert resumed["scores"] == reference["scores"]
    answers = _answers(log)
    assert max(answers.values()) == 1, "a request was answered twice by the backend"
    assert answers == _answers(plain_log)  # the same requests, each answered once

"""Crash safety of the rewriting optimizers, and of a composition (OPRO, then exemplar
selection on its winner): a run killed with SIGKILL at 10 random points, resumed after
each, ends as an uninterrupted run with the same seed does, and no model request is
answered twice by the backend.

Every run is a real subprocess (``RUN`` below) on the ladder task with fake models
that answer each request as a function of it alone (so the order in which
concurrent requests arrive does not matter). Each backend answer appends the
request's key to a log file; the process kills itself just before the answer that
would be the ``kill_at``-th in the log. The kill points are drawn with a seeded rng
from the answers of the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from ladder_fixture import ladder_task

from promptopt.llm.types import LLMRequest
from promptopt.store import RunStore

HERE = Path(__file__).resolve().parent
KILLS = 10

RUN = """
import hashlib, json, os, signal, sys
sys.path.insert(0, {here!r})
from ladder_fixture import current_text, is_feedback, label
from promptopt.api import optimize
from promptopt.llm.fakes import FakeBackend

task, log, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] or None
out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
with open(log, encoding="utf-8") as f:
    answered = sum(1 for _ in f)

def digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

def logged(role, handler):
    def answer(request):
        global answered
        if answered + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        text = handler(request)
        os.write(out, f"{{role}} {{request.key()}}\\n".encode())  # one write: whole line or none
        answered += 1
        return text
    return answer

def task_model(request):  # the system text and the exemplars shown set the level
    shown = " | ".join(m.content for m in request.messages[:-1])
    level = int(digest(shown), 16) % 11
    i = int(request.messages[-1].content.split()[1])
    return label(i) if i % 10 < level else label(i + 1)

def optimizer_model(request):
    if is_feedback(request):
        return "The text does not say how to decide."
    return f"<START>T{{digest(request.key())[:8]}}<END>"

result = optimize(task, resume=resume, backends={{
    "task": FakeBackend(logged("task", task_model)),
    "optimizer": FakeBackend(logged("optimizer", optimizer_model)),
}})
print(json.dumps({{"run": str(result.run_dir), "best": result.best.params, "scores": result.scores}}))
"""

CONFIGS = {
    "mcts": {"optimizer": "mcts",
             "config": {"iterations": 4, "expand_width": 2, "depth_limit": 3, "min_depth": 1,
                        "batch_size": 2}},
    "opro": {"optimizer": "opro", "config": {"steps": 4, "per_step": 2}},
    "gepa": {"optimizer": "gepa", "config": {"iterations": 8, "minibatch": 3}},
    # calibration at the end replays every scored candidate's answers from the run
    "opro+exemplars": {
        "optimizer": [{"name": "opro", "config": {"steps": 2, "per_step": 2}},
                      {"name": "exemplars", "config": {"k": 2, "num_sets": 4, "mutations": 2,
                                                       "per_step": 2, "calibrate_top": 2}}],
        "trainable": ("system", "exemplars"),
    },
}  # fmt: skip


def run(script: Path, task: Path, log: Path, *, kill_at: int = 0, resume: str = ""):
    return subprocess.run(
        [sys.executable, str(script), str(task), str(log), str(kill_at), resume],
        capture_output=True,
        text=True,
        timeout=120,
    )


def answers(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines()


def store_view(run_dir: str) -> dict:
    """What must not differ between the two runs: candidates, scores, optimizer records."""
    with RunStore.open(run_dir) as store:
        return {
            "candidates": [(c["id"], c["parent_id"], c["origin"]) for c in store.candidates()],
            "evaluations": sorted(
                (e["candidate_id"], e["split"], e["example_id"], e["score"])
                for e in store.evaluations()
            ),
            "records": [(r["seq"], r["kind"], r["payload"]) for r in store.optimizer_records()],
        }


def first_with_exemplars(run_dir: str, log: Path) -> int:
    """The place in the answer log of the first request that shows exemplars (stage 2's)."""
    with RunStore.open(run_dir) as store:
        requests = [LLMRequest.from_canonical(c["request"]) for c in store.llm_calls()]
    key = next(r.key() for r in requests if len(r.messages) > 2)
    return [line.split()[1] for line in answers(log)].index(key) + 1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_run_killed_at_ten_points_and_resumed_ends_as_an_uninterrupted_one(name, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN.format(here=str(HERE)), encoding="utf-8")
    # a budget that never binds: a resumed run's budget does not count replayed calls
    task = ladder_task(tmp_path / "task", **CONFIGS[name], max_calls=100_000)

    reference = run(script, task, tmp_path / "reference.log")
    assert reference.returncode == 0, reference.stderr
    expected = json.loads(reference.stdout.splitlines()[-1])
    total = len(answers(tmp_path / "reference.log"))
    assert total > 2 * KILLS

    seed = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 1000
    points = sorted(random.Random(seed).sample(range(2, total + 1), KILLS))
    log, run_dir = tmp_path / "crashed.log", ""
    for point in points:
        killed = run(script, task, log, kill_at=point, resume=run_dir)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert len(answers(log)) == point - 1
        if not run_dir:
            (run_dir,) = [str(p) for p in (task.parent / "traces").iterdir()
                          if str(p) != expected["run"]]  # fmt: skip
    last = run(script, task, log, resume=run_dir)
    assert last.returncode == 0, last.stderr
    resumed = json.loads(last.stdout.splitlines()[-1])

    assert resumed["best"] == expected["best"]
    assert resumed["scores"] == expected["scores"]
    counts = Counter(answers(log))
    assert max(counts.values()) == 1  # no request answered twice by the backend
    assert counts == Counter(answers(tmp_path / "reference.log"))
    assert store_view(run_dir) == store_view(expected["run"])
    if name == "mcts":
        kinds = Counter(kind for _, kind, _ in store_view(run_dir)["records"])
        assert kinds["backup"] == 4 and kinds["choice"] == 1
    if name == "opro+exemplars":  # both stages ran, and the run was killed in both
        origins = Counter(origin for _, _, origin in store_view(run_dir)["candidates"])
        assert origins["opro"] == 4 and origins["exemplars"] > 6
        assert points[0] < first_with_exemplars(expected["run"], tmp_path / "reference.log")
        assert points[-1] > first_with_exemplars(expected["run"], tmp_path / "reference.log")

"""The command line with a model nobody can reach: one line naming model, endpoint and cause, fast.

Each run is a real ``promptopt`` process, as a new user would start it. The two
runs of the issue (nothing listens at ``base_url``; the ``api_key_env``
variable is unset) must end within 15 s; that bound is the subprocess timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from small_task import write_small_task

from promptopt.store import RunStore, list_runs
from promptopt.testing.openai_server import OpenAITestServer

ROOT = Path(__file__).resolve().parents[1]
NOWHERE = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def _run(tmp_path: Path, model: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    write_small_task(tmp_path, f"  task: {model}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PO_UNSET_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "promptopt.cli", "optimize", "task.yaml", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "accuracy" not in proc.stdout, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("promptopt: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_nothing_listening_at_base_url_ends_within_15_s(tmp_path):
    proc = _run(tmp_path, f"{{model: 'openai:gpt-4o-mini', base_url: '{NOWHERE}'}}", timeout=15)
    assert proc.returncode not in (0, None)
    line = _one_line(proc)
    assert f"model 'openai:gpt-4o-mini' at '{NOWHERE}' cannot be used: cannot connect" in line
    assert not (tmp_path / "traces").exists()  # nothing was started, so nothing to resume


def test_an_unset_key_variable_ends_within_15_s(tmp_path):
    model = "{model: 'openai:gpt-4o-mini', api_key_env: PO_UNSET_KEY}"
    proc = _run(tmp_path, model, timeout=15)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line == (
        "promptopt: error: task.yaml: models.task.api_key_env: model 'openai:gpt-4o-mini' at "
        "'https://api.openai.com/v1' needs an API key, but the environment variable "
        "'PO_UNSET_KEY' is not set"
    )


@pytest.mark.parametrize(
    ("server_key", "cause"), [(None, "cannot connect"), ("right", "the API key was refused")]
)
def test_without_the_probe_the_run_ends_at_the_first_failure_and_keeps_its_store(
    tmp_path, server_key, cause
):
    """Unreachable: the first request's retries (about 8 s), then the end; a refused key: at once."""
    with OpenAITestServer(api_key=server_key) as server:
        url = NOWHERE if server_key is None else server.base_url
        model = f"{{model: 'openai:m', base_url: '{url}', api_key_env: PO_KEY}}"
        os.environ["PO_KEY"] = "wrong"
        try:
            proc = _run(tmp_path, model, "--no-probe", timeout=60)
        finally:
            del os.environ["PO_KEY"]
    assert proc.returncode == 1
    assert f"model 'openai:m' at '{url}' cannot be used: {cause}" in _one_line(proc)
    (run,) = list_runs(tmp_path / "traces")
    store = RunStore.open(run.run_id, output_dir=tmp_path / "traces")
    assert (
        store.status() == "failed" and "ModelUnusableError" in store.status_events()[-1]["detail"]
    )
    assert store.llm_calls() and all(call["error"] for call in store.llm_calls())
    store.close()

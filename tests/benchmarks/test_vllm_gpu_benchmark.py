"""``benchmarks/vllm_gpu.py`` end to end on the fake vLLM, and its refusal without vLLM and a GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vllm_gpu.py"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The script run in an empty folder (HOME and the caches are tmp_path's: see conftest)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=work, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_both_parts_run_on_the_fake_engine_and_say_so(tmp_path: Path) -> None:
    done = run(tmp_path, "--fake", "--n", "40", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["engine"] == "fake" and figures["n"] == 40
    assert figures["calls_per_s"] > 0 and figures["raw_calls_per_s"] > 0
    assert figures["ratio_to_raw_engine"] > 0
    assert figures["optimize_wall_s"] > 0 and figures["task_calls"] > 0
    assert 0 <= figures["seed_test"] <= 1 and 0 <= figures["best_test"] <= 1
    table = "\n".join(lines[:-1])
    assert "engine: fake" in table and "not GPU figures" in table
    assert "raw fake engine" in table and "optimize tasks/reviews" in table
    assert not list((tmp_path / "work").iterdir())  # no run folder left behind


def test_the_optimize_part_can_be_skipped(tmp_path: Path) -> None:
    done = run(tmp_path, "--fake", "--n", "10", "--rounds", "1", "--skip-optimize")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["n"] == 10 and figures["ratio_to_raw_engine"] > 0
    assert figures["optimize_wall_s"] is None and figures["best_test"] is None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_without_vllm_it_stops_with_status_2_naming_fake(tmp_path: Path) -> None:
    done = run(tmp_path, "--n", "10")
    assert done.returncode == 2
    assert done.stdout == ""
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "vLLM >= 0.11" in message and "CUDA GPU" in message and "--fake" in message

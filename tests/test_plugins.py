"""Plugins from outside promptopt: an optimizer and a provider in their own installed package.

``tests/plugins/optimizer_plugin`` and ``tests/plugins/provider_plugin`` are packages
as a third-party author would write them (``hint_suffix``, an optimizer; ``parrot``, a
provider), installed by ``make install-dev`` like any dependency, so the whole suite
runs with them present. Here
they are found through the entry points, listed by ``promptopt schema``, held to the
conformance kits, and run a task end to end from the command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from promptopt import plugins
from promptopt.cli import main
from promptopt.llm.models import providers
from promptopt.store import RunStore, list_runs
from promptopt.testing import check_backend, check_optimizer

ROOT = Path(__file__).resolve().parents[1]
NOT_INSTALLED = "the test plugins are not installed: run `make install-dev` (it installs them)"


@pytest.fixture(scope="module")
def installed() -> None:
    if "hint_suffix" not in plugins.optimizers.targets() or "parrot" not in providers():
        pytest.fail(NOT_INSTALLED)


def test_they_are_found_through_the_entry_points(installed: None) -> None:
    assert plugins.optimizers.targets()["hint_suffix"] == "po_test_optimizer.optimizer:HintSuffix"
    assert plugins.providers.targets()["parrot"] == "po_test_provider.provider:ParrotBackend"


def test_the_schema_lists_them(installed: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "hint_suffix" in schema["$defs"]["OptimizerSpec"]["properties"]["name"]["examples"]
    assert "parrot" in schema["$defs"]["ModelSpec"]["anyOf"][0]["description"]


def test_they_pass_the_conformance_kits(installed: None) -> None:
    check_optimizer(plugins.optimizers.get("hint_suffix"))
    check_backend(plugins.providers.get("parrot"), model="any")


def reviews_task(folder: Path, *, models: str, optimizer: str) -> Path:
    """A task on the shipped reviews (8 validation rows) with these models and optimizer."""
    shutil.copy(ROOT / "tasks" / "reviews" / "reviews.jsonl", folder / "reviews.jsonl")
    task = folder / "task.yaml"
    task.write_text(
        'name: plugins\nprogram: {system: "Positive or negative?", user: "{text}", '
        "choices: [positive, negative]}\ndata: {path: reviews.jsonl, inputs: [text], "
        "target: label, split: {train: 4, val: 8, test: 8}}\nmetric: {kind: exact}\n"
        f"models: {models}\noptimizer: {optimizer}\ncache: {{policy: 'off'}}\n",
        encoding="utf-8",
    )
    return task


def test_a_task_runs_on_them_end_to_end(installed: None, tmp_path: Path) -> None:
    task = reviews_task(
        tmp_path,
        models='{task: "parrot:any", optimizer: "parrot:any", judge: "parrot:any"}',
        optimizer="{name: hint_suffix, config: {steps: 3}}",
    )
    runs = tmp_path / "runs"
    promptopt = Path(sys.executable).with_name("promptopt")  # the installed command
    command = [str(promptopt), "optimize", str(task), "--output", str(runs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    [run] = list_runs(runs)
    with RunStore.open(run.path) as store:
        candidates = store.candidates()
    assert [c["origin"] for c in candidates] == ["seed"] + ["hint_suffix"] * 3
    assert candidates[3]["params"]["system"].endswith("Sarcasm means the opposite of the words.")


def test_an_optimizer_that_breaks_the_contract_is_refused_before_anything_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "po_half_optimizer.py").write_text(
        "from pydantic import BaseModel\n"
        "class HalfConfig(BaseModel): pass\n"
        "class Half:\n"
        "    name = 'half'\n"
        "    Config = HalfConfig\n"
        "    def __init__(self, config=None): pass\n"
        "    async def propose(self, state, *, llm, rng): return []\n"
        "    def observe(self, state, results): pass\n",  # no estimate_calls
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    table = {**plugins.optimizers.targets(), "half": "po_half_optimizer:Half"}
    monkeypatch.setattr(plugins.optimizers, "targets", lambda: table)
    task = reviews_task(tmp_path, models='{task: "fake:positive"}', optimizer="{name: half}")
    import promptopt
    from promptopt.errors import OptimizerError

    with pytest.raises(OptimizerError, match="'half' does not keep .* lacks estimate_calls"):
        promptopt.plan(task)
    with pytest.raises(AssertionError, match="estimate_calls"):
        check_optimizer(plugins.optimizers.get("half"))


def test_the_kit_refuses_a_plan_that_spends_more_than_it_is_given():
    from promptopt.optimizers.opro import OPRO
    from promptopt.testing.conformance import _check_plan

    _check_plan("opro", OPRO())  # promptopt's own plan keeps within its calls

    class Greedy(OPRO):
        def plan_steps(self, *, calls, n_train, n_val):
            return [n_val + 1] * 3  # whatever it is given

    with pytest.raises(AssertionError, match="plan_steps\\(calls=0\\) plans steps"):
        _check_plan("greedy", Greedy())

"""import_ref: a task's ``module:attr`` references, loaded relative to the task's folder."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from promptopt.errors import ConfigError
from promptopt.task import import_ref, make_metric
from promptopt.task.data import Example
from promptopt.task.spec import MetricSpec

METRIC = """
def score(prediction, example):
    return {value}
"""


@pytest.fixture(autouse=True)
def _own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_ref puts task folders first


def _task_folder(root: Path, name: str, value: float) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "metric.py").write_text(textwrap.dedent(METRIC.format(value=value)))
    return folder


async def test_two_tasks_metric_py_do_not_collide(tmp_path: Path) -> None:
    first = _task_folder(tmp_path, "first", 0.25)
    second = _task_folder(tmp_path, "second", 0.75)
    spec = MetricSpec(kind="python", function="metric:score")
    one, two = make_metric(spec, base_dir=first), make_metric(spec, base_dir=second)
    example = Example(id="e1", inputs={"q": "x"}, target="y")
    assert (await one.ascore("y", example)).value == 0.25
    assert (await two.ascore("y", example)).value == 0.75
    assert "metric" not in sys.modules  # neither took the plain name
    # loading a task's file again gives the module already loaded
    assert import_ref("metric:score", base_dir=first) is import_ref("metric:score", base_dir=first)
    assert import_ref("metric:score", base_dir=second)(None, None) == 0.75


def test_an_installed_module_is_imported_by_name(tmp_path: Path) -> None:
    assert import_ref("json:dumps", base_dir=tmp_path) is __import__("json").dumps
    assert import_ref("os.path:join.__name__") == "join"  # a dotted attribute path


def test_failures_are_one_line_config_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def (:\n")
    with pytest.raises(ConfigError, match=r"^metric function 'broken:f' cannot be imported"):
        import_ref("broken:f", base_dir=tmp_path, what="metric function")
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        import_ref("no_such_module_xyz:f", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        import_ref("json:nope")
    with pytest.raises(ConfigError, match="must look like"):
        import_ref("json")

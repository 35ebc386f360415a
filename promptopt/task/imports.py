"""The one way a task file's ``module:attr`` references are imported (workflow entries, python
metrics).

:func:`import_ref` resolves ``'module.path:attr.path'`` relative to the task's
folder (``base_dir``). A module that is a file in that folder is loaded from the
file under a name made from its path, so one process can load two task folders
that each hold a ``metric.py`` or ``workflow.py`` (a plain ``import metric``
would hand the second task the first one's module); loading the same file again
returns the module already loaded. Any other module is imported normally by its
dotted name (an installed package). The folder also goes first on ``sys.path``,
so such a file can import the files beside it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from promptopt.errors import ConfigError

__all__ = ["import_ref", "load_module"]

_UNIQUE_PREFIX = "_promptopt_task_"


def import_ref(ref: str, *, base_dir: str | Path | None = None, what: str = "reference") -> Any:
    """The object ``'module.path:attr.path'`` names, its module looked for in ``base_dir`` first.

    ``what`` names the reference in errors (``'program entry'``, ``'metric function'``).
    Raises ConfigError (one line) when the module or an attribute cannot be found.
    """
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise ConfigError(f"{what} {ref!r} must look like 'module.path:function'")
    folder = None if base_dir is None else Path(base_dir).resolve()
    if folder is not None and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        target: Any = load_module(module_name, folder)
    except (ImportError, SyntaxError, OSError) as exc:  # OSError: a name too long for a path
        raise ConfigError(f"{what} {ref!r} cannot be imported: {exc}") from None
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            where = target.__name__ if isinstance(target, ModuleType) else repr(target)
            raise ConfigError(
                f"{what} {ref!r} cannot be imported: {where} has no attribute {attr!r}"
            )
        target = getattr(target, attr)
    return target


def load_module(module_name: str, base_dir: Path | None) -> ModuleType:
    """The module ``module_name``: from its file in ``base_dir`` under a name unique to that
    file, else imported by its dotted name."""
    path = (
        None if base_dir is None else (base_dir / module_name.replace(".", "/")).with_suffix(".py")
    )
    if path is None or not path.is_file():
        return importlib.import_module(module_name)
    path = path.resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    unique = f"{_UNIQUE_PREFIX}{digest}_{module_name.replace('.', '_')}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module  # before running it: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    return module

"""Load a task file: YAML in, a validated and located :class:`TaskSpec` out.

:func:`load_task` is the edge where a task file is checked, once. Every failure
raises :class:`~promptopt.errors.TaskFileError` whose ``str`` is one line,
``<file>: <dotted.field>: <reason>``; pydantic's errors are translated here
(the field of the first error, a plain reason, no URLs). Beyond the models'
own checks it verifies what needs the outside world: data files exist, parse,
have the mapped columns and enough rows for ``data.split``; the optimizer is
registered and its ``config`` fits its ``Config`` model, and a task without a
metric has an optimizer that selects by a pairwise judge.

YAML is read with 1.2-style booleans (only ``true``/``false``), so ``policy: off``
and ``choices: [yes, no]`` stay strings, and a key given twice is an error; a
file nested too deeply for the parser is refused in one line too.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Protocol, get_args

import yaml
from pydantic import BaseModel, ValidationError

from promptopt import plugins
from promptopt.errors import DataError, OptimizerError, TaskFileError
from promptopt.task.data import data_files, read_rows, to_examples
from promptopt.task.spec import (
    OPTIMIZER_TAGS,
    PROGRAM_TAGS,
    PromptProgramSpec,
    PythonProgramSpec,
    TaskSpec,
)
from promptopt.text import one_line, shorten

__all__ = ["OptimizerRegistry", "explain_validation_error", "load_task"]

_PROGRAM_BY_TAG: dict[str, type[BaseModel]] = {
    "prompt program": PromptProgramSpec,
    "python program": PythonProgramSpec,
}
# Labels pydantic puts in error locations for members of a plain union (``list[str]``, ``str``).
_UNION_LABEL = re.compile(r"^(str|int|float|bool|none|any|(list|dict|tuple|set)\[.*\])$")
_PLAIN_KEY = re.compile(r"^[\w.:/+@-]{1,60}$")  # keys shown as written in a field path
_MAX_REASON = 400  # characters of a reason built from what the file says
_MAX_FLOW_DEPTH = 64  # brackets nested deeper than this are refused unread (see _too_deep)
_TYPE_WORDS = {
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "none_required": "null",
}


class OptimizerRegistry(Protocol):
    """What the loader needs of :data:`promptopt.plugins.optimizers` (tests pass a fake)."""

    def available(self) -> list[str]: ...

    def get(self, name: str) -> Any: ...


class _TaskYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans that rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                continue  # a list or mapping as a key is refused by the base class
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_TaskYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_TaskYamlLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_task(path: str | Path, *, optimizers: OptimizerRegistry | None = None) -> TaskSpec:
    """Read, validate and locate a task file; raise TaskFileError (one line) on any problem.

    ``optimizers`` defaults to :data:`promptopt.plugins.optimizers`.
    """
    shown = str(path)
    raw = _read_yaml(Path(path), shown)
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        field, reason = explain_validation_error(exc, model=TaskSpec)
        raise TaskFileError(shown, field, reason) from None
    spec = spec.located_at(path)
    _check_data(spec, shown)
    _check_optimizer(spec, shown, optimizers)
    return spec


def _read_yaml(path: Path, shown: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(shown, "", "no such task file") from None
    except IsADirectoryError:
        raise TaskFileError(shown, "", "is a folder, not a task file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(shown, "", f"cannot read: {_one_line(str(exc))}") from None
    deep = _too_deep(text)
    if deep is not None:
        reason = f"invalid YAML: brackets nested more than {_MAX_FLOW_DEPTH} deep"
        raise TaskFileError(shown, f"line {deep}", reason)
    try:
        raw = yaml.load(text, Loader=_TaskYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise TaskFileError(shown, "", "invalid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise TaskFileError(shown, "", f"invalid YAML: {_one_line(str(exc))}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise TaskFileError(shown, where, f"invalid YAML: {_one_line(problem)}") from None
    except yaml.YAMLError as exc:
        raise TaskFileError(shown, "", f"invalid YAML: {_one_line(str(exc))}") from None
    if raw is None:
        raise TaskFileError(shown, "", "the file is empty; expected a mapping of task fields")
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"a {type(raw).__name__}"
        raise TaskFileError(shown, "", f"expected a mapping of task fields, got {kind}")
    return raw


def _too_deep(text: str) -> int | None:
    """The line where ``[``/``{`` nest deeper than any task needs, or None.

    PyYAML's scanner slows down with the square of the nesting (3,000 levels took
    10 s before it overflowed the stack), so such files are refused before it reads
    them. Quotes and comments are skipped roughly: a miss only lets YAML decide.
    """
    depth, line, quote, comment = 0, 1, "", False
    for char in text:
        if char == "\n":
            line, comment = line + 1, False
        elif comment or (quote and char != quote):
            continue
        elif quote:
            quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#":
            comment = True
        elif char in "[{":
            depth += 1
            if depth > _MAX_FLOW_DEPTH:
                return line
        elif char in "]}":
            depth = max(depth - 1, 0)
    return None


def _check_data(spec: TaskSpec, shown: str) -> None:
    split = spec.data.split
    for name, file in data_files(spec).items():
        field = f"data.{name}"
        written = spec.data.files()[name]
        if not _is_file(file):
            raise TaskFileError(
                shown, field, f"no such file {written!r} (looked for {str(file)!r})"
            )
        try:
            rows = read_rows(file, fmt=spec.data.format_of(written))
            to_examples(rows, data=spec.data, path=file)
        except DataError as exc:
            raise TaskFileError(shown, field, _one_line(str(exc))) from None
        if name == "path" and split is not None and split.total > len(rows):
            raise TaskFileError(
                shown,
                "data.split",
                f"asks for {_count(split.total)} rows (train {_count(split.train)} + val "
                f"{_count(split.val)} + test {_count(split.test)}) but {written!r} has {len(rows)}",
            )


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False for a name the system cannot even look up (too long)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _count(n: int) -> str:
    """A row count for a message: huge numbers (a typo, or a fuzzer) are not spelt out."""
    return str(n) if n.bit_length() <= 64 else "more than 2**64"


def _check_optimizer(spec: TaskSpec, shown: str, optimizers: OptimizerRegistry | None) -> None:
    """Every stage is registered and its config fits; the stages select the same way (all by
    the metric, or all by a pairwise judge); a task without a metric has only pairwise ones."""
    if optimizers is None:
        optimizers = plugins.optimizers
    staged = isinstance(spec.optimizer, tuple)
    pairwise: dict[str, bool] = {}
    for i, stage in enumerate(spec.stages):
        where = f"optimizer[{i}]" if staged else "optimizer"
        optimizer = _registered(stage.name, f"{where}.name", shown, optimizers)
        try:
            optimizer.Config.model_validate(stage.config)
        except ValidationError as exc:
            field, reason = explain_validation_error(exc, model=optimizer.Config)
            raise TaskFileError(shown, _join(f"{where}.config", field), reason) from None
        # PairwiseOptimizer's one member beyond Optimizer's (a test keeps the two in step)
        pairwise[where] = callable(getattr(optimizer, "judge", None))
    if len(set(pairwise.values())) > 1:
        odd = next(w for w, p in pairwise.items() if p != next(iter(pairwise.values())))
        raise TaskFileError(
            shown,
            f"{odd}.name",
            "a pairwise optimizer (such as 'spo') selects by its judge and the others by the "
            "metric; their scores do not compare, so they cannot be stages of one run",
        )
    if spec.metric is None and not all(pairwise.values()):
        names = ", ".join(repr(stage.name) for stage in spec.stages)
        raise TaskFileError(
            shown,
            "metric",
            f"required by {'optimizers' if staged else 'optimizer'} {names}, which selects candidates by the metric "
            "(only a pairwise optimizer such as 'spo' runs without one)",
        )


def _registered(name: str, where: str, shown: str, optimizers: OptimizerRegistry) -> Any:
    """The optimizer class registered as ``name``, with a pydantic ``Config``."""
    known = optimizers.available()
    if name not in known:
        hint = difflib.get_close_matches(name, known, n=1)
        guess = f"did you mean {hint[0]!r}? " if hint else ""
        listed = ", ".join(known) or "none"
        raise TaskFileError(
            shown, where, f"unknown optimizer {name!r}; {guess}registered: {listed}"
        )
    try:
        optimizer = optimizers.get(name)
    except OptimizerError as exc:
        raise TaskFileError(shown, where, _one_line(str(exc))) from None
    config_model = getattr(optimizer, "Config", None)
    if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
        raise TaskFileError(shown, where, f"optimizer {name!r} has no pydantic Config class")
    return optimizer


# ---------------------------------------------------------------- pydantic errors


def explain_validation_error(exc: ValidationError, *, model: type[BaseModel]) -> tuple[str, str]:
    """The dotted field and a plain one-line reason for the first error of ``exc``.

    An unknown key is reported before a missing one (a typo causes both).
    ``model`` is the model that was validated; it is used to suggest the right
    key for an unknown one. Errors from members of one union at the same field
    are merged ("expected a list or a mapping").
    """
    errors = exc.errors(include_url=False)
    # A misspelt key yields "unknown key" and "missing": the unknown key is the cause.
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    first = unknown[0] if unknown and errors[0]["type"] == "missing" else errors[0]
    loc = tuple(first["loc"])
    field = _dotted(loc)
    kind = first["type"]
    ctx = first.get("ctx") or {}
    if kind == "value_error" and hasattr(ctx.get("error"), "field"):
        issue = ctx["error"]
        return _join(field, issue.field), _one_line(str(issue))
    if kind in ("value_error", "assertion_error"):
        return field, _one_line(str(ctx.get("error", first["msg"])))
    if kind == "missing":
        return field, "required key is missing"
    if kind == "extra_forbidden":
        return field, _unknown_key(loc, model)
    if kind in _TYPE_WORDS:
        wanted = [
            _TYPE_WORDS[e["type"]]
            for e in errors
            if e["type"] in _TYPE_WORDS and _dotted(tuple(e["loc"])) == field
        ]
        unique = list(dict.fromkeys(wanted))
        return field, f"expected {' or '.join(unique)}, got {_shown_input(first.get('input'))}"
    if kind == "literal_error":
        return field, f"expected {ctx.get('expected')}, got {_shown_input(first.get('input'))}"
    reason = first["msg"].replace("Input should be", "must be")
    return field, f"{_one_line(reason)}, got {_shown_input(first.get('input'))}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in PROGRAM_TAGS or part in OPTIMIZER_TAGS or _UNION_LABEL.match(str(part)):
            continue
        elif not _PLAIN_KEY.match(str(part)):
            out += f"[{_shown_input(part)}]"  # an odd key, written so it stays on one short line
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _join(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix and field else prefix or field


def _unknown_key(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    key = loc[-1] if loc else "?"
    shown = _shown_input(key)
    allowed = _fields_at(loc[:-1], model)
    if not allowed:
        return f"unknown key {shown}"
    hint = difflib.get_close_matches(str(key), allowed, n=1)
    if hint:
        return f"unknown key {shown}; did you mean {hint[0]!r}?"
    return f"unknown key {shown}; expected one of {', '.join(allowed)}"


def _fields_at(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    """The keys allowed by the model that the location ``loc`` points into."""
    candidates: list[type[BaseModel]] = [model]
    for part in loc:
        if part in _PROGRAM_BY_TAG:
            candidates = [_PROGRAM_BY_TAG[part]]
            continue
        owner = next((c for c in candidates if part in c.model_fields), None)
        if owner is not None:
            candidates = _models_in(owner.model_fields[part].annotation)
    return list(candidates[0].model_fields) if len(candidates) == 1 else []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(m for m in _models_in(arg) if m not in found)
    return found


def _shown_input(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return shorten(repr(value), 60, marker="...")


def _one_line(text: str) -> str:
    """``text`` on one line, cut to a length a person reads (a reason may quote a huge value)."""
    return shorten(one_line(text), _MAX_REASON, marker="...")

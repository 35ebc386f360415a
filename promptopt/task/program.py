"""The program being optimized: how a candidate's parameters and one example become an answer.

Two kinds, chosen by the task file:

- :class:`PromptProgram`: a chat prompt. Parameters ``system`` (text), ``user``
  (a template with ``{field}`` placeholders), ``exemplars`` (a list of
  ``{"inputs": {...}, "output": "..."}`` shown as earlier chat turns) and, for
  programs with ``choices``, ``calibration``: per-choice offsets added to the
  choices' log-probabilities when the backend scores them (local llama.cpp does
  at temperature 0), which corrects a small model's lean towards one label.
- :class:`PythonProgram`: a Python entry point ``module:function`` called as
  ``await function(inputs, llm=...)`` (or a plain function, run in a worker
  thread with a blocking ``llm``). Its trainable parameters are discovered: every
  module-level ``param(...)`` of the entry's module and the code of every
  ``@node(trainable=True)`` function there (see :func:`promptopt.graph.params_of`).
  Each run happens inside a trace whose values are the candidate's, so
  ``param.value`` reads the candidate's value and a trainable node runs the
  candidate's code (in the sandbox when it was rewritten). Values given under
  ``params:`` in the task file replace the seeds; names not discovered there are
  handed to a function that takes a ``params=`` keyword.

Every program has ``kinds``: each trainable parameter's kind, ``text``,
``exemplars`` or ``code``; optimizers pick what to edit from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import json
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from promptopt.errors import ConfigError
from promptopt.graph import Param, current_trace, params_of, trace
from promptopt.graph.state import STATE
from promptopt.llm.types import LLMRequest, LLMResponse, Message

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.task.data import Example

__all__ = ["Program", "PromptProgram", "PythonProgram", "make_program", "placeholders"]


class Program(Protocol):
    trainable: tuple[str, ...]
    kinds: Mapping[str, str]

    def seed_params(self) -> dict[str, Any]: ...

    async def run(self, params: Mapping[str, Any], example: Example, *, llm: LLM) -> str: ...

    def describe(self, params: Mapping[str, Any]) -> str:
        """The candidate as text a person can read and paste."""
        ...


def placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _as_exemplar(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return {"inputs": dict(item["inputs"]), "output": str(item["output"])}
    return {"inputs": dict(item.inputs), "output": str(item.output)}


class PromptProgram:
    """A chat prompt: system line, exemplars as chat turns, then the user template."""

    def __init__(
        self,
        *,
        system: str,
        user: str,
        exemplars: Sequence[Any] = (),
        trainable: Sequence[str] = ("system", "exemplars"),
        choices: Sequence[str] = (),
        max_tokens: int | None = 64,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> None:
        self._seed = {
            "system": system,
            "user": user,
            "exemplars": [_as_exemplar(e) for e in exemplars],
            "calibration": {},
        }
        self.trainable = tuple(trainable)
        self.kinds = {
            name: "exemplars" if name == "exemplars" else "text" for name in self.trainable
        }
        self.choices = tuple(choices)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.stop = tuple(stop)

    def seed_params(self) -> dict[str, Any]:
        return {name: self._seed[name] for name in self.trainable}

    def _full(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**self._seed, **{k: v for k, v in params.items() if k in self._seed}}

    def request(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> LLMRequest:
        p = self._full(params)
        msgs: list[Message] = []
        if p["system"]:
            msgs.append(Message("system", p["system"]))
        for ex in p["exemplars"]:
            msgs.append(Message("user", _fill(p["user"], ex["inputs"])))
            msgs.append(Message("assistant", ex["output"]))
        msgs.append(Message("user", _fill(p["user"], inputs)))
        return LLMRequest(
            messages=tuple(msgs),
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            stop=self.stop,
            choices=self.choices,
        )

    async def run(self, params: Mapping[str, Any], example: Example, *, llm: LLM) -> str:
        response = await llm.acomplete(self.request(params, example.inputs))
        offsets = params.get("calibration") or {}
        scores = response.choice_logprobs
        if offsets and len(scores) == len(self.choices):
            # the calibrated decision: the most likely choice after per-label offsets
            shifted = [
                s + float(offsets.get(c, 0.0)) for c, s in zip(self.choices, scores, strict=True)
            ]
            return self.choices[max(range(len(shifted)), key=shifted.__getitem__)]
        return response.text

    def describe(self, params: Mapping[str, Any]) -> str:
        p = self._full(params)
        lines = ["# system", p["system"], ""]
        for i, ex in enumerate(p["exemplars"], 1):
            lines += [
                f"# exemplar {i}: user",
                _fill(p["user"], ex["inputs"]),
                f"# exemplar {i}: assistant",
                ex["output"],
                "",
            ]
        lines += ["# user template", p["user"]]
        if p["calibration"]:
            offsets = ", ".join(f"{c}: {v:+.2f}" for c, v in p["calibration"].items())
            lines += ["", f"# calibration (added to each choice's log-probability): {offsets}"]
        return "\n".join(lines) + "\n"


def _fill(template: str, inputs: Mapping[str, Any]) -> str:
    try:
        return template.format_map({k: "" if v is None else v for k, v in inputs.items()})
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"template {template!r} cannot be filled from fields {sorted(inputs)!r}: {exc}"
        ) from exc


class _BlockingLLM:
    """What a plain (non-async) program function gets: ``complete`` runs on the engine's loop.

    The call carries the worker thread's trace state to the loop, so an LLM call
    made inside a node is recorded on that node.
    """

    def __init__(self, llm: LLM, loop: asyncio.AbstractEventLoop) -> None:
        self._llm = llm
        self._loop = loop

    def __repr__(self) -> str:
        return f"Blocking{self._llm!r}"

    def _on_loop(self, coro: Any) -> Any:
        state = STATE.get()

        async def within_caller_state() -> Any:
            STATE.set(state)  # this task's own context: the caller's trace and node
            return await coro

        return asyncio.run_coroutine_threadsafe(within_caller_state(), self._loop).result()

    def complete(self, request: LLMRequest) -> LLMResponse:
        return self._on_loop(self._llm.acomplete(request))

    def chat(self, prompt: str, *, system: str | None = None, **fields: Any) -> str:
        return self._on_loop(self._llm.achat(prompt, system=system, **fields))


class PythonProgram:
    """A Python entry point ``module:function`` and its discovered trainable parameters."""

    def __init__(
        self, *, entry: str, params: Mapping[str, Any] | None = None, base_dir: Path | None = None
    ) -> None:
        self.entry = entry
        self._fn = _import_entry(entry, base_dir)
        self._is_async = inspect.iscoroutinefunction(self._fn)
        module = sys.modules.get(getattr(self._fn, "__module__", "") or "")
        self.found: dict[str, Param] = params_of(module) if isinstance(module, ModuleType) else {}
        seeds = {name: p.peek() for name, p in self.found.items()}
        seeds.update(params or {})
        self._params = seeds
        self.trainable = tuple(seeds)
        self.kinds = {
            name: self.found[name].kind.value if name in self.found else _kind_of(value)
            for name, value in seeds.items()
        }
        self._takes_params = _accepts(self._fn, "params")

    def seed_params(self) -> dict[str, Any]:
        return dict(self._params)

    async def run(self, params: Mapping[str, Any], example: Example, *, llm: LLM) -> str:
        """Run the workflow on one example; inside the caller's trace, else in a new one."""
        merged = {**self._params, **params}
        if current_trace() is not None:
            return await self._call(merged, example, llm)
        with trace(name=self.entry, values=merged):
            return await self._call(merged, example, llm)

    async def _call(self, merged: dict[str, Any], example: Example, llm: LLM) -> str:
        extra = {"params": merged} if self._takes_params else {}
        if self._is_async:
            result = await self._fn(dict(example.inputs), llm=llm, **extra)
        else:
            blocking = _BlockingLLM(llm, asyncio.get_running_loop())
            result = await asyncio.to_thread(self._fn, dict(example.inputs), llm=blocking, **extra)
        return "" if result is None else str(result)

    def describe(self, params: Mapping[str, Any]) -> str:
        merged = {**self._params, **params}
        return "\n".join(f"# {name}\n{_shown(value)}\n" for name, value in merged.items())


def _kind_of(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, Mapping) and "inputs" in v for v in value):
        return "exemplars"
    return "text"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value

    return json.dumps(value, ensure_ascii=False, indent=2)


def _accepts(fn: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def _import_entry(entry: str, base_dir: Path | None) -> Any:
    """The entry's function. A module file in the task's folder is loaded from that file.

    Two task folders may both hold a ``workflow.py``: a module found in the task's
    folder is loaded under a name made from its path, so one process can run both
    (a plain ``import workflow`` would hand the second task the first one's module).
    """
    module_name, _, attr = entry.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"program entry {entry!r} must look like 'module:function'")
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        module = _load_module(module_name, base_dir)
        fn = getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError, OSError) as exc:  # OSError: a name too long
        raise ConfigError(f"program entry {entry!r} cannot be imported: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"program entry {entry!r} is not callable")
    return fn


def _load_module(module_name: str, base_dir: Path | None) -> ModuleType:
    path = (
        None if base_dir is None else (base_dir / module_name.replace(".", "/")).with_suffix(".py")
    )
    if path is None or not path.is_file():
        return importlib.import_module(module_name)
    path = path.resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    unique = f"_promptopt_task_{digest}_{module_name.replace('.', '_')}"
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


def make_program(program_spec: Any, *, base_dir: Path | None = None) -> Program:
    """Build the runtime program from the task file's ``program`` block."""
    entry = getattr(program_spec, "entry", None)
    if entry:
        return PythonProgram(
            entry=entry, params=dict(getattr(program_spec, "params", None) or {}), base_dir=base_dir
        )
    return PromptProgram(
        system=program_spec.system or "",
        user=program_spec.user,
        exemplars=program_spec.exemplars or (),
        trainable=program_spec.trainable,
        choices=program_spec.choices or (),
        max_tokens=program_spec.max_tokens,
        temperature=program_spec.temperature,
        stop=program_spec.stop or (),
    )

"""The program being optimized: how a candidate's parameters and one example become an answer.

Two kinds, chosen by the task file:

- :class:`PromptProgram`: a chat prompt. Parameters ``system`` (text), ``user``
  (a template with ``{field}`` placeholders), ``exemplars`` (a list of
  ``{"inputs": {...}, "output": "..."}`` shown as earlier chat turns) and, for
  programs with ``choices``, ``calibration``: per-choice offsets added to the
  choices' log-probabilities when the backend scores them (local llama.cpp does
  at temperature 0), which corrects a small model's lean towards one label.
- :class:`PythonProgram`: a Python entry point ``module:function`` called as
  ``await function(inputs, llm=...)`` on an event loop of its own in a worker
  thread, or, for a plain function, called in a worker thread; either way user
  code never blocks the engine's loop, and ``llm`` carries each model call back
  to that loop (:class:`_EngineLLM`). Its trainable parameters are discovered: every
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
import functools
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from promptopt import aio
from promptopt.errors import ConfigError
from promptopt.graph import Param, current_trace, params_of, trace
from promptopt.llm.types import LLMRequest, LLMResponse, Message
from promptopt.task.imports import import_ref
from promptopt.task.placeholders import placeholders
from promptopt.task.selection import NearestExemplars, NearestIndex

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.task.data import Example

__all__ = [
    "Program",
    "PromptProgram",
    "PythonProgram",
    "make_program",
    "placeholders",
    "shown_exemplars",
]


class Program(Protocol):
    # read-only to the engine (properties, so a program may keep a plain dict or tuple)
    @property
    def trainable(self) -> tuple[str, ...]: ...

    @property
    def kinds(self) -> Mapping[str, str]: ...

    @property
    def features(self) -> frozenset[str]: ...

    def seed_params(self) -> dict[str, Any]: ...

    async def run(self, params: Mapping[str, Any], example: Example, *, llm: LLM) -> str: ...

    def describe(self, params: Mapping[str, Any]) -> str:
        """The candidate as text a person can read and paste."""
        ...


def _as_exemplar(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return {"inputs": dict(item["inputs"]), "output": str(item["output"])}
    return {"inputs": dict(item.inputs), "output": str(item.output)}


def shown_exemplars(value: Any, inputs: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    """The exemplars an ``exemplars`` value shows for ``inputs``: a list as it is, or the
    nearest ones when it is a ``{"select": "nearest", ...}`` value (see
    :class:`~promptopt.task.selection.NearestExemplars`). Workflows can call it too."""
    if not NearestExemplars.is_spec(value):
        return value
    return _nearest_index(json.dumps(value, sort_keys=True)).pick(inputs)


@functools.lru_cache(maxsize=64)
def _nearest_index(value_json: str) -> NearestIndex:
    return NearestIndex(NearestExemplars.from_value(json.loads(value_json)))


class PromptProgram:
    """A chat prompt: system line, exemplars as chat turns, then the user template.

    ``features`` says what optimizers may propose beyond plain values: here,
    exemplars chosen per input (``nearest``).
    """

    features: frozenset[str] = frozenset({"nearest_exemplars"})

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
        for ex in shown_exemplars(p["exemplars"], inputs):
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
        exemplars = p["exemplars"]
        if NearestExemplars.is_spec(exemplars):
            spec = NearestExemplars.from_value(exemplars)
            lines += [f"# exemplars: for each input, the {spec.k} nearest of these "
                      f"{len(spec.pool)} ({spec.embedder} similarity)", ""]  # fmt: skip
            exemplars = spec.pool
        for i, ex in enumerate(exemplars, 1):
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


class _EngineLLM:
    """What a workflow function gets as ``llm``: its calls run on the engine's loop.

    The workflow runs in a worker thread (an async one on a loop of its own), so
    user code never blocks the loop the engine evaluates on. Its model calls go
    back to that loop, where the shared budget, cache, concurrency limit and
    connection pools serve them, and carry the worker's context, so each call is
    recorded on the node that made it. ``acomplete``/``achat`` await the call;
    ``complete``/``chat`` block the calling thread, so plain nodes can call the
    model too, in plain and in async workflows.
    """

    def __init__(self, llm: LLM, loop: asyncio.AbstractEventLoop) -> None:
        self._llm = llm
        self._loop = loop

    def __repr__(self) -> str:
        return repr(self._llm)  # the client's: traces and optimizers' views treat it as one

    async def acomplete(self, request: LLMRequest) -> LLMResponse:
        return await aio.await_on(self._loop, self._llm.acomplete(request))

    async def achat(self, prompt: str, *, system: str | None = None, **fields: Any) -> str:
        return await aio.await_on(self._loop, self._llm.achat(prompt, system=system, **fields))

    def complete(self, request: LLMRequest) -> LLMResponse:
        return aio.run_on(self._loop, self._llm.acomplete(request))

    def chat(self, prompt: str, *, system: str | None = None, **fields: Any) -> str:
        return aio.run_on(self._loop, self._llm.achat(prompt, system=system, **fields))


class PythonProgram:
    """A Python entry point ``module:function`` and its discovered trainable parameters."""

    features: frozenset[str] = frozenset()  # its code reads exemplar lists as they are

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
        on_engine_loop = _EngineLLM(llm, asyncio.get_running_loop())
        if self._is_async:
            call = self._fn(dict(example.inputs), llm=on_engine_loop, **extra)
            result = await aio.on_new_loop(call)
        else:
            result = await aio.in_thread(
                self._fn, dict(example.inputs), llm=on_engine_loop, **extra
            )
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
    """The entry's function (see :func:`~promptopt.task.imports.import_ref`: a module file in
    the task's folder is loaded from that file, so two tasks' ``workflow.py`` never collide)."""
    fn = import_ref(entry, base_dir=base_dir, what="program entry")
    if not callable(fn):
        raise ConfigError(f"program entry {entry!r} is not callable")
    return fn


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

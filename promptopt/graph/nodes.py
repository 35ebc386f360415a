"""``@node``: traced functions, sync or async, optionally with their own code as a parameter.

Outside a trace a node costs one ``ContextVar.get`` on top of the function call.
Inside one it looks its inputs up by identity (see :mod:`promptopt.graph.tracer`),
marks itself the running node (so LLM calls made inside attach to it), times the
call with ``perf_counter_ns``, keeps the output or the exception (and re-raises
it), and registers the output for the nodes that consume it. Nothing is
serialised while the workflow runs.

``@node(trainable=True)`` turns the function's source (dedented, decorator lines
removed) into a :class:`Param` of kind ``code`` named ``"<node>.code"``; the node
depends on it, so ``backward`` hands it to an optimizer like any other parameter.
When the running trace holds other source for that parameter (a candidate an
optimizer proposed), the node runs that source in a :class:`~promptopt.sandbox.Sandbox`
child instead of the original function: arguments and result go through JSON,
the code sees the standard library only, and any failure (exception, timeout,
memory) is raised in the workflow as :class:`~promptopt.errors.ProposedCodeError`.
Otherwise, and always outside a trace, the original function runs in-process.
"""

from __future__ import annotations

import functools
import inspect
import textwrap
import tokenize
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, TypeVar, overload

from promptopt.errors import ConfigError, ProposedCodeError, SandboxError
from promptopt.graph.params import Param, ParamKind
from promptopt.graph.state import STATE

__all__ = ["Op", "node", "op_of", "source_of"]

F = TypeVar("F", bound=Callable[..., Any])


def source_of(fn: Callable[..., Any]) -> str:
    """``fn``'s source, dedented, without the decorator lines above its ``def``."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError) as exc:
        raise ConfigError(
            f"trainable node {getattr(fn, '__qualname__', fn)!r} needs its source code, "
            f"which inspect cannot find ({exc}); define it in a file"
        ) from exc
    lines = source.splitlines(keepends=True)
    for at, line in enumerate(lines):
        if line.lstrip().startswith(("def ", "async def ")):
            return "".join(lines[at:])
    return source


class Op:
    """What every call of one node shares: its name, function, docs and code parameter."""

    __slots__ = ("_signature", "doc", "fn", "name", "param", "source", "trainable")

    def __init__(self, fn: Callable[..., Any], *, name: str, trainable: bool) -> None:
        self.fn = fn
        self.name = name
        self.doc = inspect.cleandoc(fn.__doc__ or "")
        self.trainable = trainable
        self.source = source_of(fn) if trainable else ""
        self.param: Param | None = (
            Param(self.source, name=f"{name}.code", kind=ParamKind.CODE,
                  description=f"the source code of node {name!r}")
            if trainable else None
        )  # fmt: skip
        self._signature: inspect.Signature | None = None

    def arg_names(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        """One name per argument value (positional, then keyword), from the signature."""
        if self._signature is None:
            try:
                self._signature = inspect.signature(self.fn)
            except (TypeError, ValueError):
                self._signature = inspect.Signature()
        names: list[str] = []
        positional = [
            p for p in self._signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]  # fmt: skip
        star = next(
            (p.name for p in self._signature.parameters.values() if p.kind is p.VAR_POSITIONAL),
            "args",
        )
        for at in range(len(args)):
            names.append(
                positional[at].name if at < len(positional) else f"{star}[{at - len(positional)}]"
            )
        names.extend(kwargs)
        return names

    def __repr__(self) -> str:
        return f"Op({self.name!r}, trainable={self.trainable!r})"


def _wrap_sync(fn: Callable[..., Any], op: Op) -> Callable[..., Any]:
    get, enter, leave, clock = STATE.get, STATE.set, STATE.reset, perf_counter_ns

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        state = get()
        if state is None:
            return fn(*args, **kwargs)
        record = [op, args, kwargs or None, state[1], None, None, 0, 0, None]  # see new_record
        token = enter((state[0], record))
        record[6] = clock()
        try:
            record[4] = output = fn(*args, **kwargs)
        except BaseException as exc:
            record[5] = exc
            raise
        finally:
            record[7] = clock()
            leave(token)
            state[0]._calls.append(record)
        return output

    return traced


def _wrap_async(fn: Callable[..., Any], op: Op) -> Callable[..., Any]:
    get, enter, leave, clock = STATE.get, STATE.set, STATE.reset, perf_counter_ns

    @functools.wraps(fn)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        state = get()
        if state is None:
            return await fn(*args, **kwargs)
        record = [op, args, kwargs or None, state[1], None, None, 0, 0, None]  # see new_record
        token = enter((state[0], record))
        record[6] = clock()
        try:
            record[4] = output = await fn(*args, **kwargs)
        except BaseException as exc:
            record[5] = exc
            raise
        finally:
            record[7] = clock()
            leave(token)
            state[0]._calls.append(record)
        return output

    return traced


def _proposed(trace: Any, op: Op) -> str | None:
    """The source this run gives a trainable node, when it is not the node's own."""
    source = trace.value_of(op.param)
    return None if source == op.source else source


@functools.cache
def _default_sandbox() -> Any:
    from promptopt.sandbox import Sandbox

    return Sandbox()


def _sandbox_for(trace: Any, op: Op, source: Any, args: Any, kwargs: Any) -> tuple[Any, tuple]:
    if not isinstance(source, str):
        raise ProposedCodeError(
            f"node {op.name!r}: proposed code must be source text, got {type(source).__name__}",
            kind="invalid",
        )
    return trace.sandbox or _default_sandbox(), (source, op.fn.__name__, list(args), kwargs or {})


def _sandbox_value(op: Op, result: Any) -> Any:
    if result.ok:
        return result.value
    first = (result.error or "failed").splitlines()[0]
    raise ProposedCodeError(f"node {op.name!r}: proposed code {first}", kind=result.kind)


def _run_proposed(trace: Any, op: Op, source: Any, args: Any, kwargs: Any) -> Any:
    box, call = _sandbox_for(trace, op, source, args, kwargs)
    try:
        result = box.run(*call)
    except ConfigError as exc:  # arguments that are not JSON values
        raise ProposedCodeError(f"node {op.name!r}: {exc}", kind="invalid") from exc
    except SandboxError as exc:  # no isolation here and no opt-out: the code does not run
        raise ProposedCodeError(f"node {op.name!r}: {exc}", kind="unavailable") from exc
    return _sandbox_value(op, result)


async def _arun_proposed(trace: Any, op: Op, source: Any, args: Any, kwargs: Any) -> Any:
    box, call = _sandbox_for(trace, op, source, args, kwargs)
    try:
        result = await box.arun(*call)
    except ConfigError as exc:
        raise ProposedCodeError(f"node {op.name!r}: {exc}", kind="invalid") from exc
    except SandboxError as exc:
        raise ProposedCodeError(f"node {op.name!r}: {exc}", kind="unavailable") from exc
    return _sandbox_value(op, result)


def _wrap_trainable(fn: Callable[..., Any], op: Op) -> Callable[..., Any]:
    """The plain wrapper around a body that runs the run's proposed source, if any, instead."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def body_async(*args: Any, **kwargs: Any) -> Any:
            state = STATE.get()  # inside the wrapper: (this run's trace, this call's record)
            source = None if state is None else _proposed(state[0], op)
            if state is None or source is None:
                return await fn(*args, **kwargs)
            return await _arun_proposed(state[0], op, source, args, kwargs)

        return _wrap_async(body_async, op)

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        state = STATE.get()
        source = None if state is None else _proposed(state[0], op)
        if state is None or source is None:
            return fn(*args, **kwargs)
        return _run_proposed(state[0], op, source, args, kwargs)

    return _wrap_sync(body, op)


def _decorate(fn: Callable[..., Any], *, name: str | None, trainable: bool) -> Callable[..., Any]:
    if not callable(fn):
        raise ConfigError(f"@node decorates a function, got {fn!r}")
    op = Op(fn, name=name or fn.__name__, trainable=trainable)
    if trainable:
        wrap = _wrap_trainable
    else:
        wrap = _wrap_async if inspect.iscoroutinefunction(fn) else _wrap_sync
    traced = wrap(fn, op)
    traced.__promptopt_op__ = op  # type: ignore[attr-defined]
    return traced


@overload
def node(fn: F, /) -> F: ...
@overload
def node(*, name: str | None = None, trainable: bool = False) -> Callable[[F], F]: ...
def node(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None, trainable: bool = False
) -> Any:
    """Trace a function: ``@node``, ``@node(name="classify")`` or ``@node(trainable=True)``."""
    if fn is not None:
        return _decorate(fn, name=name, trainable=trainable)
    return lambda f: _decorate(f, name=name, trainable=trainable)


def op_of(fn: Callable[..., Any]) -> Op:
    """The :class:`Op` behind a ``@node`` function (its name, docs and code parameter)."""
    op = getattr(fn, "__promptopt_op__", None)
    if not isinstance(op, Op):
        raise ConfigError(f"{getattr(fn, '__qualname__', fn)!r} is not a @node function")
    return op

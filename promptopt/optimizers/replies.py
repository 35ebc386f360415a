"""Reading what an optimizer model replied: its JSON object, and the values it suggests.

Models wrap JSON in prose and code fences, use single quotes, leave trailing commas, write
Python's ``True``/``None`` or JSON's ``true``/``null`` in the wrong dialect, and put raw newlines
inside strings. :func:`parse_json_reply` finds each balanced ``{...}`` in the reply, in order
(braces inside strings do not count), and returns the first one that reads as an object through,
in turn, :func:`json.loads` (control characters allowed), the same without trailing commas, and
:func:`ast.literal_eval` after JSON's literals become Python's. Anything else raises
:class:`~promptopt.errors.ReplyParseError` with a short reason that can be shown to the model
when asking for a repair.

:func:`marked_texts` reads replies that wrap plain texts (new prompts) in markers
such as ``<START>`` ... ``<END>``; :func:`cut_off` says whether the last of them was still
open when the reply ended (what a version copies is :mod:`~promptopt.optimizers.copies`'s).

:func:`match_name` maps a name the model wrote (``#Instruction``, ``$route``) to
a parameter's name; :func:`check_value` accepts a suggested value for one kind of
parameter (``text``, ``exemplars``, ``code``) or raises ReplyParseError saying why not.

:func:`read_rewrite` takes the new prompt out of a JSON reply (SPO's, PROMST's) and
:func:`reply_schema` is the JSON schema such a reply is asked to follow.

:func:`counted_reply` gets a reply in the first place: it sends one request and counts
what came of it in the optimizer's stats.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from promptopt.errors import BadRequestError, ReplyParseError, UnchangedValueError
from promptopt.task.placeholders import placeholders

if TYPE_CHECKING:
    from promptopt.llm.client import LLM
    from promptopt.llm.types import LLMRequest, LLMResponse

__all__ = [
    "check_value",
    "counted_reply",
    "cut_off",
    "marked_texts",
    "match_name",
    "parse_json_reply",
    "placeholders",
    "read_rewrite",
    "reply_schema",
    "unwrap",
]

_QUOTES = frozenset("\"'")
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}
_WORD = re.compile(r"[A-Za-z_]\w*")
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


async def counted_reply(llm: LLM, request: LLMRequest, stats: dict[str, Any]) -> LLMResponse | None:
    """The optimizer model's response to ``request``, counted in ``stats`` (``calls``, then
    ``replies`` or ``request_errors``); None when the model refused the request as bad (the
    prompt does not fit it: the same request would fail the same way)."""
    stats["calls"] += 1
    try:
        response = await llm.acomplete(request)
    except BadRequestError:
        stats["request_errors"] += 1
        return None
    stats["replies"] += 1
    return response


def parse_json_reply(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` as a dict; raises ReplyParseError with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise ReplyParseError("the reply is empty")
    first_error = ""
    found = False
    for chunk in _objects(text):
        found = True
        try:
            return _read(chunk)
        except ReplyParseError as exc:
            first_error = first_error or str(exc)
    if found:
        raise ReplyParseError(first_error)
    if "{" in text:
        raise ReplyParseError("the JSON object is never closed (the reply may be cut off)")
    raise ReplyParseError("the reply holds no JSON object")


def _objects(text: str) -> Iterator[str]:
    """Every top-level balanced ``{...}`` of ``text``, in order; quotes are respected."""
    start = text.find("{")
    while start != -1:
        end = _closing(text, start)
        if end is None:
            return
        yield text[start : end + 1]
        start = text.find("{", end + 1)


def _stretches(text: str, start: int = 0) -> Iterator[tuple[int, int, bool]]:
    """``text[start:]`` cut into ``(begin, end, quoted)`` stretches: plain text, or one
    string literal with its quotes (an unterminated one runs to the end)."""
    plain_from, string_from, quote, escaped = start, start, "", False
    for at in range(start, len(text)):
        char = text[at]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
                yield string_from, at + 1, True
                plain_from = at + 1
        elif char in _QUOTES:
            yield plain_from, at, False
            quote, string_from = char, at
    if quote:
        yield string_from, len(text), True
    else:
        yield plain_from, len(text), False


def _closing(text: str, start: int) -> int | None:
    depth = 0
    for begin, end, quoted in _stretches(text, start):
        if quoted:
            continue
        for at in range(begin, end):
            if text[at] in "{[":
                depth += 1
            elif text[at] in "}]":
                depth -= 1
                if depth == 0:
                    return at
    return None


def _read(chunk: str) -> dict[str, Any]:
    errors = []
    for attempt in (chunk, _outside_strings(chunk, _drop_trailing_commas)):
        try:
            value = json.loads(attempt, strict=False)
        except RecursionError:
            raise ReplyParseError("the JSON object is nested too deeply") from None
        except ValueError as exc:
            errors.append(f"not valid JSON: {exc.args[0] if exc.args else exc}")
            continue
        return _as_object(value)
    try:
        value = ast.literal_eval(_outside_strings(chunk, _python_words))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ReplyParseError(errors[0]) from None
    return _as_object(value)


def _as_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplyParseError(f"expected a JSON object, got {type(value).__name__}")
    return {str(key): item for key, item in value.items()}


def _outside_strings(chunk: str, edit: Callable[[str], str]) -> str:
    """``chunk`` with ``edit`` applied to each stretch of text outside string literals."""
    return "".join(
        chunk[begin:end] if quoted else edit(chunk[begin:end])
        for begin, end, quoted in _stretches(chunk)
    )


def _drop_trailing_commas(stretch: str) -> str:
    # a trailing comma and its closing bracket are always in the same stretch:
    # only whitespace can stand between them
    return _TRAILING_COMMA.sub(r"\1", stretch)


def _python_words(stretch: str) -> str:
    return _WORD.sub(lambda m: _JSON_WORDS.get(m.group(0), m.group(0)), stretch)


# -- suggested values ------------------------------------------------------------------------

_NOT_NAME = re.compile(r"[^a-z0-9]+")
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:```|$)", re.DOTALL)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _squash(name: str) -> str:
    return _NOT_NAME.sub("", name.lower())


def match_name(key: str, names: Sequence[str]) -> str | None:
    """The parameter among ``names`` that ``key`` means, ignoring case, punctuation and
    decoration (``#instruction``, ``$Instruction``, ``route_code``); a code parameter
    ``f.code`` also answers to ``f``. ``None`` when no name, or more than one, fits."""
    if key in names:
        return key
    wanted = _squash(str(key))
    if not wanted:
        return None
    exact = [n for n in names if _squash(n) == wanted]
    if len(exact) == 1:
        return exact[0]
    short = [n for n in names if n.endswith(".code") and _squash(n[: -len(".code")]) == wanted]
    return short[0] if len(short) == 1 and not exact else None


def check_value(
    kind: str, new: Any, old: Any, *, name: str, fields: Sequence[str] = (),
    choices: Sequence[str] = (),
) -> Any:  # fmt: skip
    """``new`` as a valid value of parameter ``name`` of ``kind``, different from ``old``.

    ``text`` must be a non-empty string keeping ``old``'s ``{placeholders}`` and adding
    none that no field in ``fields`` fills; ``exemplars`` a list of ``{"inputs": {...},
    "output": ...}`` objects (or a JSON string of one), whose inputs hold every field
    in ``fields`` and whose outputs are among ``choices`` if given (written as there);
    ``code`` the source of exactly one function with the name and arguments of the
    function in ``old``. Raises ReplyParseError naming the problem.
    """
    checker = _CHECKS.get(kind)
    if checker is None:
        raise ReplyParseError(f"{name!r} has kind {kind!r}, which cannot be edited")
    value, same = checker(new, old, name, fields)
    if kind == "exemplars" and choices:
        value = _among(value, choices, name)
        same = value == _plain_exemplars(old)
    if same:
        raise UnchangedValueError(f"{name!r} is unchanged")
    return value


def _among(items: list[dict], choices: Sequence[str], name: str) -> list[dict]:
    """``items`` with each output spelled as its choice; an output that is none of them is
    refused: the model cannot answer it (seen: "neutral" in an SST-2 exemplar)."""
    spelled = {c.strip().casefold(): c for c in choices}
    out = []
    for at, item in enumerate(items):
        choice = spelled.get(item["output"].strip().casefold())
        if choice is None:
            raise ReplyParseError(
                f"{name!r} item {at} has the output {item['output']!r}, which is not one of "
                f"the answers ({', '.join(choices)})"
            )
        out.append({**item, "output": choice})
    return out


def marked_texts(text: str, *, start: str = "<START>", end: str = "<END>") -> list[str]:
    """The texts that ``text`` wraps in ``start`` ... ``end``, in order, stripped, empty ones left out.

    A block still open when the reply ends counts (the reply may be cut off). A
    reply without any ``start`` marker is one text, less a code fence around it
    and a closing ``end`` marker: small models often drop the opening marker. A
    closing marker written as an XML end tag (``</END>``, or even ``</START>``, both
    seen from Qwen2.5-Coder-1.5B) ends a text too.
    """
    if not isinstance(text, str):
        return []
    if end.startswith("<"):
        for marker in (end, start):
            text = text.replace("</" + marker.lstrip("<"), end)
    if start not in text:
        fenced = _FENCE.search(text)
        body = (fenced.group(1) if fenced else text).split(end)[0]
        return [body.strip()] if body.strip() else []
    found = []
    for block in text.split(start)[1:]:
        body = block.split(end)[0].strip()
        if body:
            found.append(body)
    return found


def cut_off(text: str, *, start: str = "<START>", end: str = "<END>") -> bool:
    """Whether ``text``'s last text is still open at its end: a ``start`` marker (or, with
    none, the reply itself) with no closing marker after it, as :func:`marked_texts` reads
    closing markers. Said of a reply that reached its ``max_tokens``, its last version was
    cut off there."""
    if end.startswith("<"):
        for marker in (end, start):
            text = text.replace("</" + marker.lstrip("<"), end)
    return text.rfind(end) < text.rfind(start) if start in text else end not in text


_WRAPPED = re.compile(r"\A\s*<(TEXT|CODE)>\s*(.*?)\s*(?:</\1>\s*)?\Z", re.DOTALL)


def unwrap(text: str) -> str:
    """``text`` without the ``<TEXT>`` or ``<CODE>`` tags around it, the tags the rewrite
    requests put around the current value (a small model copies them into its version; the
    closing tag may be cut off)."""
    wrapped = _WRAPPED.match(text)
    return wrapped.group(2) if wrapped else text


def _text(new: Any, old: Any, name: str, fields: Sequence[str]) -> tuple[Any, bool]:
    if not isinstance(new, str) or not new.strip():
        raise ReplyParseError(f"{name!r} must be a non-empty text")
    value = new.strip()
    had = placeholders(old)
    lost = [p for p in had if "{" + p + "}" not in value]
    if lost:
        kept = ", ".join("{" + p + "}" for p in had)
        raise ReplyParseError(f"{name!r} must keep the placeholders {kept}")
    # promst's Qwen once appended "(expected classification: {expected_class})" to a system
    # text: a placeholder no input fills is left as it is written, or breaks a template
    unknown = [p for p in placeholders(value) if p not in fields and p not in had]
    if unknown:
        allowed = ", ".join("{" + p + "}" for p in fields) or "none"
        raise ReplyParseError(
            f"{name!r} uses {', '.join('{' + p + '}' for p in unknown)}, which no input fills "
            f"(the inputs: {allowed}); write it without"
        )
    return value, isinstance(old, str) and value == old.strip()


def _exemplars(new: Any, old: Any, name: str, fields: Sequence[str]) -> tuple[Any, bool]:
    if isinstance(new, str):
        try:
            new = json.loads(new, strict=False)
        except ValueError:
            raise ReplyParseError(f"{name!r} must be a JSON list of exemplars") from None
    if isinstance(new, dict):
        new = [new]
    if not isinstance(new, list) or not new:
        raise ReplyParseError(f"{name!r} must be a non-empty list of exemplars")
    items = []
    for at, item in enumerate(new):
        inputs = item.get("inputs") if isinstance(item, dict) else None
        if not isinstance(inputs, dict) or "output" not in item:
            raise ReplyParseError(
                f'{name!r} item {at} must be an object {{"inputs": {{...}}, "output": ...}}'
            )
        missing = [f for f in fields if f not in inputs]
        if missing:
            raise ReplyParseError(f"{name!r} item {at} lacks the input {missing[0]!r}")
        kept = {str(k): v for k, v in inputs.items() if not fields or k in fields}
        if not kept:
            raise ReplyParseError(f"{name!r} item {at} has no inputs")
        items.append({"inputs": kept, "output": str(item["output"])})
    return items, items == _plain_exemplars(old)


def _plain_exemplars(value: Any) -> list[dict]:
    return [
        {"inputs": dict(e.get("inputs", {})), "output": str(e.get("output"))}
        for e in value or ()
        if isinstance(e, dict)
    ]


def _code(new: Any, old: Any, name: str, fields: Sequence[str]) -> tuple[Any, bool]:
    if not isinstance(new, str) or not new.strip():
        raise ReplyParseError(f"{name!r} must be the source code of a function, as a string")
    fenced = _FENCE.search(new)
    source = textwrap.dedent(fenced.group(1) if fenced else new).strip("\n") + "\n"
    try:
        compile(source, f"<{name}>", "exec")
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        lineno = getattr(exc, "lineno", None)  # a SyntaxError's; a ValueError has none
        where = f" (line {lineno})" if lineno else ""
        reason = getattr(exc, "msg", str(exc))
        raise ReplyParseError(f"{name!r} does not compile: {reason}{where}") from None
    original = _function(old, name)
    defs = [n for n in tree.body if isinstance(n, _FUNCTIONS)]
    wanted = original.name if original else name.removesuffix(".code")
    if len(defs) != 1 or defs[0].name != wanted:
        raise ReplyParseError(f"{name!r} must define exactly one function, named {wanted!r}")
    extra = [n for n in tree.body if not isinstance(n, (*_FUNCTIONS, ast.Import, ast.ImportFrom))]
    if extra:
        raise ReplyParseError(f"{name!r} must hold only the function {wanted!r} (and imports)")
    if original is not None and _arg_names(defs[0]) != _arg_names(original):
        args = ", ".join(_arg_names(original))
        raise ReplyParseError(f"{name!r} must keep the arguments ({args}) of {wanted!r}")
    same = original is not None and ast.dump(tree) == ast.dump(ast.parse(textwrap.dedent(old)))
    return source, same


def _function(source: Any, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    if not isinstance(source, str):
        return None
    try:
        tree = ast.parse(textwrap.dedent(source))
    except (SyntaxError, ValueError):
        return None
    return next((n for n in tree.body if isinstance(n, _FUNCTIONS)), None)


def _arg_names(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return names


_CHECKS: dict[str, Callable[[Any, Any, str, Sequence[str]], tuple[Any, bool]]] = {
    "text": _text,
    "exemplars": _exemplars,
    "code": _code,
}


def read_rewrite(reply: str, *, key: str, old: Any, name: str, fields: Sequence[str] = ()) -> str:
    """The new value under ``key`` of a JSON reply; raises ReplyParseError saying why not.

    An unchanged value is returned (the caller tells it as a no-op); a value that drops
    one of ``old``'s placeholders, or adds one that no field in ``fields`` fills, is refused.
    """
    data = parse_json_reply(reply)
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReplyParseError(f'had no "{key}" with the new prompt as a text.')
    if isinstance(old, str) and value.strip() == old.strip():
        return old
    try:
        return check_value("text", value, old, name=name, fields=fields)
    except ReplyParseError as exc:
        raise ReplyParseError(f"was refused: {exc}.") from None


def reply_schema(keys: Sequence[tuple[str, int]]) -> str:
    """A JSON schema (as text) of an object with these string keys, each bounded in length,
    in the order given: a grammar-constrained backend (llama.cpp) writes the keys in the
    schema's order, so the reasoning asked for first is written before the prompt it leads to."""
    properties = {
        key: {"type": "string", "minLength": 1, "maxLength": limit} for key, limit in keys
    }
    schema = {
        "type": "object",
        "properties": properties,
        "required": [key for key, _ in keys],
        "additionalProperties": False,
    }
    return json.dumps(schema, separators=(",", ":"))

"""What OptoPrime shows its optimizer model, and the shape of the reply it asks for.

A :class:`View` is one example's part of the prompt: the joint traced subgraph
of its run (or a synthetic one-line program when there is no usable trace).
Values are shown as clipped one-line JSON (:mod:`.shown`, what every optimizer
shows its model), client reprs removed, so that the same search state always
renders the same request.
The template parts come from ``templates/optoprime.txt`` (see
:mod:`promptopt.optimizers.meta_prompts`); :func:`reply_schema`
is the JSON schema of a reply, one property per trainable variable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptopt.graph.backward import joint_subgraph
from promptopt.llm.types import LLMRequest
from promptopt.optimizers.base import Evaluated, ExampleResult, SearchState
from promptopt.optimizers.shown import input_fields, show_value

__all__ = ["View", "kind_of", "reply_schema", "request_size", "value_lines", "view_of"]

# reprs of objects, not data: ``<pkg.Client object at 0x...>`` and promptopt's LLM clients
# (a workflow's ``llm`` shows its client's repr)
_OBJECT_REPR = re.compile(r"^(?:<[^<>]* object(?: at 0x[0-9A-Fa-f]+)?>|LLM\([^()]*\))$")


@dataclass(frozen=True, slots=True)
class View:
    """What one example shows of the program: a joint subgraph, or a synthetic one."""

    code: tuple[str, ...]
    documentation: dict[str, str]
    inputs: dict[str, Any]
    others: dict[str, Any]
    outputs: dict[str, Any]
    feedback: str
    descriptions: dict[str, str] = field(default_factory=dict)
    traced: bool = False  # from the run's trace (else the synthetic one-line program)


def request_size(request: LLMRequest) -> int:
    return sum(len(m.content) for m in request.messages)


def kind_of(state: SearchState, name: str, value: Any) -> str:
    kinds = getattr(state, "kinds", None) or {}
    if name in kinds:
        return kinds[name]
    if isinstance(value, list):
        return "exemplars"
    if name.endswith(".code"):
        return "code"
    return "text"


def view_of(
    result: ExampleResult,
    params: Mapping[str, Any],
    trainable: Sequence[str],
    *,
    callee: str = "program",
) -> View:
    """One example's view: its traced joint subgraph, else a synthetic line calling ``callee``
    (``language_model`` for a prompt program, whose one step is the model's call)."""
    feedback = result.score.feedback or result.error or f"score {result.score.value:g}"
    run = getattr(result, "trace", None)
    if run is not None:
        try:
            nodes = run.nodes
            sub = joint_subgraph(run, params=trainable) if nodes else None
        except Exception:  # an unreadable trace must not end the run: show the synthetic view
            sub = None
        if sub is not None and sub.code:
            return View(
                code=sub.code,
                documentation=dict(sub.documentation),
                inputs=dict(sub.inputs),
                others=dict(sub.others),
                outputs=dict(sub.outputs),
                feedback=sub.feedback or feedback,
                descriptions={n.name: n.description for n in nodes if n.kind == "param"},
                traced=True,
            )
    inputs = {str(k): v for k, v in result.example.inputs.items()}
    args = ", ".join(f"{n}={n}" for n in (*inputs, *(t for t in trainable if t in params)))
    return View(
        code=(f"output = {callee}({args})",),
        documentation={},
        inputs=inputs,
        others={},
        outputs={"output": result.output if result.output is not None else result.error},
        feedback=feedback,
    )


def value_lines(values: Mapping[str, Any], limit: int, *, dedupe: bool = False) -> str:
    out: list[str] = []
    seen: dict[str, str] = {}  # a value's shown text -> the first name it was shown for
    for name, value in values.items():
        if isinstance(value, str) and _OBJECT_REPR.match(value):
            continue  # a client object: nothing to learn from its repr
        shown = show_value(value, limit)
        if dedupe and shown in seen and len(shown) > 20:
            out.append(f"{name} = (same as {seen[shown]})")
            continue
        seen.setdefault(shown, name)
        out.append(f"{name} = {shown}")
    return "\n".join(out) or "(none)"


def reply_schema(state: SearchState, base: Evaluated, *, code_chars: int) -> str:
    """The reply's JSON schema: a suggestion may hold each variable, in its kind's shape.

    Lengths are bounded so that a constrained small model cannot ramble past
    ``max_tokens`` and cut its own JSON short (llama.cpp keeps bounds up to 512).
    """
    text = {"type": "string", "minLength": 1, "maxLength": 400}
    fields = input_fields(state)
    exemplar = {
        "type": "object",
        "properties": {
            "inputs": {
                "type": "object",
                "properties": {f: {"type": "string", "maxLength": 400} for f in fields},
                "required": fields,
                "additionalProperties": False,
            },
            # an exemplar's answer is one the model may give: "neutral" on SST-2 was not
            "output": (
                {"type": "string", "enum": list(state.choices)}
                if state.choices
                else {"type": "string", "minLength": 1, "maxLength": 200}
            ),
        },
        "required": ["inputs", "output"],
        "additionalProperties": False,
    }
    shapes = {
        "text": text,
        "code": {"type": "string", "minLength": 1, "maxLength": code_chars},
        "exemplars": {"type": "array", "maxItems": 8, "items": exemplar},
    }
    variables = {
        name: shapes.get(kind_of(state, name, base.candidate.params.get(name)), text)
        for name in state.trainable
    }
    # keys in the order the model should write them (llama.cpp's grammar keeps it): the
    # reasoning before the suggestion it leads to. Sorted, "answer" came first and Qwen2.5-
    # Coder-1.5B spent it on a guess at the whole fix, the reasoning cut off after it.
    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": 300},
            "answer": {"type": "string", "maxLength": 100},
            "suggestion": {
                "type": "object",
                "properties": variables,
                "additionalProperties": False,
            },
        },
        "required": ["reasoning", "answer", "suggestion"],
        "additionalProperties": False,
    }
    return json.dumps(schema, separators=(",", ":"))

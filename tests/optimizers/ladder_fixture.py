"""A chat-prompt task whose every prompt has a known reward, for testing rewriting optimizers.

``ladder_task(...)`` writes a task (a prompt program with a trainable ``system``
text, labelled ``item <i>`` rows in explicit train/val/test files) to the test's
folder. ``ladder_model(levels)`` is its fake task model: with system text ``s``
it answers the items ``i`` with ``i % 10 < levels[s]`` right and the others
wrong, so a prompt's validation reward is ``levels[s] / 10`` exactly (10 val
items). ``rewriting_model(...)`` is a fake optimizer model: it answers a feedback
request with a sentence and a rewrite request with new versions of the current
text, named after it (``P`` -> ``P.a``, ``P.b``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from promptopt.llm.types import LLMRequest

LABELS = ("positive", "negative")
_ITEM = re.compile(r"item (\d+)")
_CURRENT = re.compile(r"<TEXT>\n(.*?)\n</TEXT>", re.DOTALL)


def label(i: int) -> str:
    return LABELS[i % 2]


def ladder_model(levels: Mapping[str, int]) -> Callable[[LLMRequest], str]:
    def answer(request: LLMRequest) -> str:
        level = levels.get(request.messages[0].content, 0)
        i = int(_ITEM.search(request.messages[-1].content).group(1))
        return label(i) if i % 10 < level else label(i + 1)

    return answer


def current_text(request: LLMRequest) -> str:
    """The text a rewrite request shows as the current one."""
    return _CURRENT.search(request.messages[1].content).group(1)


def is_feedback(request: LLMRequest) -> bool:
    return "Do not write the new version yet" in " ".join(request.messages[-1].content.split())


def rewriting_model(suffixes: str = "ab") -> Callable[[LLMRequest], str]:
    """Feedback: a sentence; a rewrite of ``X``: ``X.a``, ``X.b``, ... (one per suffix)."""

    def answer(request: LLMRequest) -> str:
        if is_feedback(request):
            return "The text does not say how to decide."
        current = current_text(request)
        return "".join(f"<START>{current}.{s}<END>" for s in suffixes)

    return answer


def ladder_task(
    root: Path,
    *,
    optimizer: str | list[Any],
    config: Mapping[str, Any] | None = None,
    max_calls: int = 1000,
    n_train: int = 10,
    seed_prompt: str = "P",
    trainable: Sequence[str] = ("system",),
    racing: bool = True,
) -> Path:
    """Write the task and its data under ``root``; returns the task file.

    ``optimizer`` is a name (configured by ``config``) or a list of stages as a task
    file writes them."""
    root.mkdir(parents=True, exist_ok=True)
    items = {"train": range(100, 100 + n_train), "val": range(10), "test": range(200, 210)}
    for split, numbers in items.items():
        rows = [json.dumps({"text": f"item {i}", "label": label(i)}) for i in numbers]
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = {
        "name": "ladder",
        "seed": 0,
        "program": {
            "system": seed_prompt,
            "user": "{text}",
            "trainable": list(trainable),
            "choices": list(LABELS),
            "max_tokens": 4,
        },
        "data": {
            "train": "train.jsonl",
            "val": "val.jsonl",
            "test": "test.jsonl",
            "inputs": ["text"],
            "target": "label",
        },
        "metric": {"kind": "exact"},
        "models": {"task": "fake:ladder"},
        "optimizer": (
            optimizer
            if isinstance(optimizer, list)
            else {"name": optimizer, "config": dict(config or {})}
        ),
        "budget": {"max_calls": max_calls},
        "racing": racing,
        "concurrency": 4,
        "cache": {"policy": "off"},
        "output": str(root / "traces"),
    }
    path = root / "task.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path

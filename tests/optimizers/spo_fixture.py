"""A label-free question-answering task for SPO, and deterministic fakes of its three models.

(A module of its own, not ``conftest``: see ``triage_fixture``.)

``qa_task(...)`` (the fixture; ``write_qa_task`` outside pytest) writes a
prompt-program task over ``questions.jsonl`` with no target column (or with one,
``labels=True``). The fakes answer from what each
request shows, never from a queue, so a resumed run gets the same answers:

- ``task_model``: a long rambling answer, unless the system prompt says "brief";
- ``optimizer_model``: the current prompt plus one sentence of ``EDITS`` it does
  not hold yet, picked by the request's seed (the prompt itself once all are in);
- ``judge_model``: the side whose answers are shorter in total, ``A`` on a tie.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promptopt.llm.types import LLMRequest

QUESTIONS = [
    {"question": "What is the boiling point of water at sea level?", "answer": "100 C"},
    {"question": "Who wrote Hamlet?", "answer": "Shakespeare"},
    {"question": "How many legs does a spider have?", "answer": "8"},
    {"question": "What is the capital of Japan?", "answer": "Tokyo"},
    {"question": "What gas do plants take in?", "answer": "carbon dioxide"},
    {"question": "What is two plus two?", "answer": "4"},
]
SEED_PROMPT = "Answer the question."
EDITS = (" Be kind.", " Be brief.", " Use plain words.", " Name your source.")

_ANSWERS = re.compile(r"#Answer A\n(.*?)\n#Answer B\n(.*?)(?=\n\n## Input|\n\nWhich set)", re.S)


def task_model(request: LLMRequest) -> str:
    question = request.messages[-1].content
    if "brief" in request.messages[0].content:
        return f"{question.split()[-1]}"
    return f"Well, about '{question}', there is a lot one could say before answering it."


def current_prompt(request: LLMRequest) -> str:
    """The prompt an SPO rewrite request shows (between #Prompt and #Answers)."""
    text = request.messages[-1].content
    return text.split("#Prompt\n", 1)[1].split("\n\n#Answers", 1)[0]


def optimizer_model(request: LLMRequest) -> str:
    prompt = current_prompt(request)
    missing = [e for e in EDITS if e not in prompt]
    new = prompt + missing[(request.seed or 0) % len(missing)] if missing else prompt
    return json.dumps({"analysis": "too long", "modification": "one sentence", "prompt": new})


def answer_sets(request: LLMRequest) -> tuple[list[str], list[str]]:
    """The A and B answers a judge request shows, per input."""
    pairs = _ANSWERS.findall(request.messages[-1].content)
    return [a.strip() for a, _ in pairs], [b.strip() for _, b in pairs]


def judge_model(request: LLMRequest) -> str:
    a, b = answer_sets(request)
    return "B" if sum(map(len, b)) < sum(map(len, a)) else "A"


TASK = """\
name: qa-notes
seed: {seed}
program:
  system: {prompt}
  user: "{{question}}"
  trainable: [system]
data:
  path: questions.jsonl
  inputs: [question]
{target}  split: {{train: 0, val: 3, test: 3, seed: 0}}
{metric}models: {{task: "fake:qa"}}
optimizer: {{name: spo, config: {config}}}
budget: {{max_calls: {max_calls}}}
cache: {{policy: "off"}}
concurrency: 2
output: {output}
"""


def write_qa_task(
    folder: Path,
    *,
    labels: bool = False,
    metric: str | None = None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    max_calls: int = 200,
) -> Path:
    """Write ``questions.jsonl`` and ``task.yaml`` into ``folder``; return the task file."""
    rows = QUESTIONS if labels else [{"question": q["question"]} for q in QUESTIONS]
    (folder / "questions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    path = folder / "task.yaml"
    path.write_text(
        TASK.format(
            seed=seed,
            prompt=json.dumps(SEED_PROMPT),
            target="  target: answer\n" if labels else "",
            metric=f"metric: {metric}\n" if metric else "",
            config=json.dumps(config or {"rounds": 3}),
            max_calls=max_calls,
            output=json.dumps(str(folder / "traces")),
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def qa_task(tmp_path: Path) -> Callable[..., Path]:
    return lambda **options: write_qa_task(tmp_path, **options)

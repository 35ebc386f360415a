"""A yes/no prompt-program task with two feedback rules, and pure fakes of its models.

(A module of its own, not ``conftest``: see ``triage_fixture``.)

``write_yes_no_task(folder, config)`` writes ``rows.jsonl`` and ``task.yaml``: the
rules ``chatty`` (the answer has a space) and ``shouting`` (all capitals), exact
metric, optimizer ``promst`` with ``config``. The fakes answer from the request
alone, so a resumed run gets the same answers:

- ``yes_no_model``: the right label when the system prompt asks for one word;
  else ``YEP`` for a yes (shouting, and wrong) and a sentence for a no (chatty);
- ``promst_model``: a summary names its error type; a rewrite appends one of
  ``ADDITIONS`` to the current prompt, picked by the request's seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from promptopt.llm.types import LLMRequest

ROWS = [
    {"text": f"{'good' if i % 2 else 'bad'} thing {i}", "label": "yes" if i % 2 else "no"}
    for i in range(10)
]
ADDITIONS = (" Think.", " Be calm.", " Read twice.", " Answer with one word.", " Be exact.")

TASK = """\
name: yes-no
program:
  system: "Decide."
  user: "{{text}}"
  trainable: [system]
data:
  path: rows.jsonl
  inputs: [text]
  target: label
  split: {{train: 0, val: 6, test: 4, seed: 0}}
metric: {{kind: exact}}
feedback:
  - name: chatty
    message: "Answer with one word: yes or no."
    output_matches: " "
  - name: shouting
    message: "Write in lower case."
    output_matches: "^[A-Z]+$"
models: {{task: "fake:yn"}}
optimizer: {{name: promst, config: {config}}}
cache: {{policy: "off"}}
output: {output}
"""


def write_yes_no_task(folder: Path, config: dict[str, Any]) -> Path:
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = folder / "task.yaml"
    path.write_text(
        TASK.format(config=json.dumps(config), output=json.dumps(str(folder / "traces")))
    )
    return path


def yes_no_model(request: LLMRequest) -> str:
    text, system = request.messages[-1].content, request.messages[0].content
    label = "yes" if "good" in text else "no"
    if "one word" in system:
        return label
    return "YEP" if "good" in text else f"I would say {label}"


def is_summary(request: LLMRequest) -> bool:
    return request.messages[0].content.startswith("You review the failures")


def promst_model(request: LLMRequest) -> str:
    text = request.messages[-1].content
    if is_summary(request):
        return "Summary of " + text.split("#Error type\n", 1)[1].split(":", 1)[0] + "."
    current = text.split("#Prompt\n", 1)[1].split("\n\n#Errors", 1)[0]
    new = current + ADDITIONS[(request.seed or 0) % len(ADDITIONS)]
    return json.dumps({"reasoning": "r", "prompt": new})

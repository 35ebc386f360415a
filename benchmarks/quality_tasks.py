"""The two tasks, two settings and the runs of ``benchmarks/quality.py``: splits, seeds, configs.

SST-2 and TREC (coarse classes) with the splits of ``../shared/BASELINES.md``:

- SST-2: train = first 50 rows of ``train.jsonl``, val = first 100 of ``dev.jsonl``,
  test = first 300 of ``test.jsonl``;
- TREC: train = rows 1-50 of ``train.jsonl``, val = rows 51-150 of it, test = first
  300 rows of ``test.jsonl``, which no optimizer sees.

Every run of a task starts from the same seed program (so the seed's requests, and
their cached answers, are the same in every run): a system line that names the
labels, the input as the user turn, answers constrained to the labels (``choices``),
and both the system line and the exemplars trainable, since each optimizer edits
what it always edits. ``spo`` reads no labels and shows its optimizer the
incumbent's answers to the validation questions, so its val is the first 3 rows
of the same val split (the paper's 3 sample questions).

Two settings: ``smollm2`` (SmolLM2-135M the task model, Qwen2.5-Coder-1.5B the
optimizer and judge model; 100 validation and 300 test rows) and ``qwen``
(Qwen2.5-Coder-1.5B both, the GEPA paper's single-model setting, where instructions
matter; 200 test rows and 50 validation rows on TREC, what Qwen's speed on 2 cores
affords, 100 on SST-2). With the seed line above Qwen already scores 0.905 on SST-2's
test rows, near its ceiling, so the ``qwen`` setting starts SST-2 from a plainer seed:
the labels alone. SST-2's first 50 validation rows are too easy for Qwen to choose by:
with a calibration offset fitted there, five programs scoring 0.870-0.935 on test scored
0.96-1.00 on them, the seed highest (50 of 50) and the best on test lowest; fitted on the
first 100 they scored 0.930-0.960, the seed lowest and the best on test highest.

The optimizer model (optimizer and judge roles) may make at most
:data:`MAX_OPTIMIZER_CALLS` calls a run; :func:`optimizer_call_bound` is each
config's worst case (every retry and repair taken), checked before a run starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MAX_CALLS = 731  # the best peer's optimization calls on SST-2 in BASELINES.md
MAX_OPTIMIZER_CALLS = 40  # the papers' counts scaled down: Qwen writes ~15 tokens/s on 2 cores
TASK_MODEL = "local:smollm2"
OPTIMIZER_MODEL = "local:qwen2.5-coder-1.5b"
REPLY_TOKENS = 160  # optimizer-model replies: an instruction, not an essay
# gepa's reflections rewrite a text that grows with the rules it gathers (Qwen's replies hit
# a 320 cap 30 of 40 times on TREC and 39 of 40 on SST-2, cutting every child off); the
# peers' reflection and proposal model gets the same (peers.py passes it on)
REFLECTION_TOKENS = 600
SPO_VAL = 3

# Each stage bounded so that its optimizer-model calls stay under MAX_OPTIMIZER_CALLS
# (see optimizer_call_bound) and its task calls fit 731 at |val| = 100.
CONFIGS: dict[str, Any] = {
    "exemplars": {"name": "exemplars",
                  "config": {"k": 4, "nearest_k": 8, "num_sets": 3, "mutations": 2,
                             "per_step": 2}},
    "mcts": {"name": "mcts",
             "config": {"iterations": 2, "expand_width": 2, "depth_limit": 3, "min_depth": 1,
                        "batch_size": 5, "retries": 1, "max_tokens": REPLY_TOKENS}},
    "opro": {"name": "opro",
             "config": {"steps": 4, "per_step": 2, "retries": 1, "exemplars": 3,
                        "max_tokens": REPLY_TOKENS}},
    "optoprime": {"name": "optoprime",
                  "config": {"steps": 7, "examples_per_step": 2, "memory": 2,
                             "max_tokens": 2 * REPLY_TOKENS}},
    "promst": {"name": "promst",
               "config": {"n_children": 2, "n_selected": 1, "expansions": 3, "min_level": 1,
                          "max_level": 3, "retries": 1, "predictor": False,
                          "max_tokens": REPLY_TOKENS}},
    "spo": {"name": "spo",
            "config": {"rounds": 6, "votes": 4, "retries": 1, "max_tokens": REPLY_TOKENS}},
    # 40 reflections at most and no retry (40 Qwen calls), as the gepa library gets in
    # peers.py; the 731 calls pay for about six accepted children at 100 validation rows,
    # and a rejected one costs 7 calls
    "gepa": {"name": "gepa",
             "config": {"iterations": 40, "minibatch": 3, "retries": 0,
                        "max_tokens": REFLECTION_TOKENS}},
}  # fmt: skip
# The composition: OPRO rewrites the instruction with about half the budget (4 versions),
# then the exemplar search picks demonstrations for OPRO's winner (a random set and a
# mutation that grow the pool, then nearest-per-input; 3 sets) and calibrates it.
COMPOSITION = "opro+exemplars"
STAGES = {
    COMPOSITION: [
        {"name": "opro", "config": {**CONFIGS["opro"]["config"], "steps": 2}},
        {"name": "exemplars", "config": {**CONFIGS["exemplars"]["config"], "num_sets": 1,
                                         "mutations": 1, "selectors": ["nearest"]}},
    ]
}  # fmt: skip
RUNS = (*CONFIGS, COMPOSITION)
RATED = ("mcts", "spo", "promst", "opro")  # min_gain_over_seed is taken over these
# in the setting where instructions matter, every LLM-driven optimizer is rated
RATED_QWEN = (*RATED, "optoprime", "gepa")


# Worst-case optimizer- and judge-model calls of one stage, from its config: every
# retry, repair and expansion taken (the bounds the optimizers' docstrings give).
_CALL_BOUNDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "exemplars": lambda c: 0,
    "mcts": lambda c: c["iterations"] * c["depth_limit"] * c["expand_width"] * (2 + c["retries"]),
    "opro": lambda c: c["steps"] * c["per_step"] * (1 + c["retries"]),
    "optoprime": lambda c: 2 * c["steps"],
    "promst": lambda c: c["expansions"] * (1 + c["n_children"] * (1 + c["retries"])),
    "spo": lambda c: c["rounds"] * (1 + c["retries"] + c["votes"]),
    "gepa": lambda c: c["iterations"] * (1 + c["retries"]),  # merges ask the model nothing
}


def optimizer_call_bound(stages: list[dict[str, Any]]) -> int:
    """Most optimizer- and judge-model calls the stages can make, every retry taken."""
    return sum(_CALL_BOUNDS[stage["name"]](stage["config"]) for stage in stages)


def stages_of(run: str) -> list[dict[str, Any]]:
    return STAGES[run] if run in STAGES else [CONFIGS[run]]


@dataclass(frozen=True)
class Task:
    """One benchmark task: where its rows are and the seed program every run starts from."""

    name: str
    title: str
    description: str
    system: str
    input: str
    labels: tuple[str, ...]
    val_file: str  # a dev file, or "train.jsonl": then the rows after the training ones

    @property
    def files(self) -> tuple[str, ...]:
        """The files of its data folder that :meth:`write_data` reads."""
        return tuple(dict.fromkeys(("train.jsonl", self.val_file, "test.jsonl")))

    def write_data(self, data: Path, folder: Path, *, val: int, test: int) -> dict[str, Path]:
        """The split's files under ``folder``: train, val (``val`` rows), test (``test`` rows)."""
        start = _TRAIN_ROWS if self.val_file == "train.jsonl" else 0
        rows = {
            "train": _rows(data / "train.jsonl", 0, _TRAIN_ROWS),
            "val": _rows(data / self.val_file, start, start + val),
            "test": _rows(data / "test.jsonl", 0, test),
        }
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for split, items in rows.items():
            paths[split] = folder / f"{split}.jsonl"
            paths[split].write_text("".join(json.dumps(r) + "\n" for r in items), "utf-8")
        return paths

    def spec(
        self,
        run: str,
        *,
        paths: dict[str, Path],
        models: dict[str, str],
        max_calls: int,
        cache: Path,
        output: Path,
    ) -> dict[str, Any]:
        """The task file of one run (or of the seed's evaluation, ``run`` "seed")."""
        stages = [{"name": "exemplars", "config": {}}] if run == "seed" else stages_of(run)
        val = SPO_VAL if run == "spo" else None
        return {
            "name": f"{self.name}-{run.replace('+', '-')}",
            "description": self.description,
            "seed": 0,
            "program": {
                "system": self.system,
                "user": f"{{{self.input}}}",
                "trainable": ["system", "exemplars"],
                "choices": list(self.labels),
                "max_tokens": 4,
            },
            "data": {
                **{split: str(path) for split, path in paths.items()},
                "limits": {"val": val},
                "inputs": [self.input],
                "target": "label",
            },
            "metric": {"kind": "exact"},
            "models": {
                "task": models["task"],
                "optimizer": models["optimizer"],
                "judge": models["optimizer"],
            },
            "optimizer": stages,
            "budget": {"max_calls": max_calls},
            "cache": {"policy": "readwrite", "dir": str(cache)},
            "concurrency": 4,
            "output": str(output),
        }


_SST2_LABELS = ("positive", "negative")
_TREC_LABELS = ("abbreviation", "description", "entity", "human", "location", "number")
_TRAIN_ROWS = 50
# name, title, description (SPO's requirements), seed system line, input field, labels,
# where the validation rows come from (BASELINES.md's splits)
TASKS = {
    task.name: task
    for task in (
        Task("sst2", "SST-2",
             "Classify the sentiment of a movie review as positive or negative.",
             "You are a sentiment classifier. Reply with exactly one word: positive or negative.",
             "text", _SST2_LABELS, "dev.jsonl"),
        Task("trec", "TREC coarse classes",
             f"Classify a question by the type of its answer: {', '.join(_TREC_LABELS)}.",
             "Classify the question by the type of its answer. Reply with exactly one word: "
             "abbreviation, description, entity, human, location or number.",
             "question", _TREC_LABELS, "train.jsonl"),
    )
}  # fmt: skip


def _rows(path: Path, start: int, stop: int) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for i, line in enumerate(handle) if start <= i < stop]


@dataclass(frozen=True)
class Setting:
    """Which model answers, how many rows, and the seeds that differ from the tasks' own."""

    name: str
    task_model: str
    val: int
    test: int
    rated: tuple[str, ...]
    seeds: Mapping[str, str] = field(default_factory=dict)  # task -> its seed system line
    task_val: Mapping[str, int] = field(default_factory=dict)  # task -> its val rows, if not val

    def task(self, name: str) -> Task:
        """The task as this setting runs it (its seed line replaced where the setting says)."""
        task = TASKS[name]
        return replace(task, system=self.seeds[name]) if name in self.seeds else task

    def val_of(self, name: str) -> int:
        """The validation rows of task ``name`` in this setting."""
        return self.task_val.get(name, self.val)


SETTINGS = {
    "smollm2": Setting("smollm2", TASK_MODEL, val=100, test=300, rated=RATED),
    "qwen": Setting("qwen", OPTIMIZER_MODEL, val=50, test=200, rated=RATED_QWEN,
                    seeds={"sst2": "positive or negative"}, task_val={"sst2": 100}),
}  # fmt: skip

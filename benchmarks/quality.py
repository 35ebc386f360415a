"""Quality on SST-2 with SmolLM2-135M as task and optimizer model, against BASELINES.md.

Split and metric exactly as ../shared/BASELINES.md: train = first 50 rows of
train.jsonl, val = first 100 rows of dev.jsonl, test = first 300 rows of
test.jsonl; the stripped, lower-cased output must equal the gold label.

Measured in the same run:
- the two-line hand prompt with two exemplars (train rows 0 and 1), free decoding,
  max_tokens 3: the bar every peer failed to reach (0.617 in BASELINES.md);
- promptopt's seed (the same system line, no exemplars, answers constrained to the
  labels) and the exemplar optimizer under a budget of 731 optimization calls
  (the best peer's spend), scored once on the 300 test rows.

    python benchmarks/quality.py [--data ../shared/data/sst2] [--max-calls 731]

Prints a table and, as its last line, JSON with best_test_acc, best_optimizer,
calls, seed_test_acc and the hand prompt's accuracy measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from promptopt.api import aoptimize
from promptopt.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a sentiment classifier. Reply with exactly one word: positive or negative."
PEERS = {  # from ../shared/BASELINES.md (measured on this machine by the CEO's session)
    "DSPy BootstrapFewShotWithRandomSearch (best peer)": (0.480, 731),
    "DSPy MIPROv2 light, seed 10": (0.460, 696),
    "Trace OptoPrime, 8 steps": (0.000, 948),
}

COMMON = """\
seed: 0
data:
  train: {data}/train.jsonl
  val: {data}/dev.jsonl
  test: {data}/test.jsonl
  limits: {{train: 50, val: 100, test: 300}}
  inputs: [text]
  target: label
metric: {{kind: exact}}
models: {{task: "local:smollm2"}}
cache: {{policy: "off"}}
concurrency: 4
output: {out}
"""

HAND = """\
name: sst2-hand-prompt
program:
  system: {system}
  user: "{{text}}"
  exemplars: {exemplars}
  trainable: [exemplars]
  max_tokens: 3
optimizer: {{name: exemplars}}
"""

OPTIMIZED = """\
name: sst2-exemplars
program:
  system: {system}
  user: "{{text}}"
  trainable: [exemplars]
  choices: [positive, negative]
  max_tokens: 3
optimizer:
  name: exemplars
  config: {{k: {k}, num_sets: {num_sets}, mutations: {mutations}, per_step: 2}}
budget: {{max_calls: {max_calls}}}
"""


def first_rows(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle, strict=False)]


def write_task(folder: Path, name: str, body: str, common: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(body + common, encoding="utf-8")
    return path


async def run(args: argparse.Namespace) -> dict:
    data = Path(args.data).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="promptopt-quality-"))
    common = COMMON.format(data=data, out=json.dumps(str(tmp / "traces")))
    train = first_rows(data / "train.jsonl", 2)
    hand_exemplars = json.dumps(
        [{"inputs": {"text": r["text"]}, "output": r["label"]} for r in train]
    )
    hand_task = write_task(
        tmp, "hand", HAND.format(system=json.dumps(SYSTEM), exemplars=hand_exemplars), common
    )
    opt_task = write_task(
        tmp,
        "optimized",
        OPTIMIZED.format(
            system=json.dumps(SYSTEM),
            k=args.k,
            num_sets=args.num_sets,
            mutations=args.mutations,
            max_calls=args.max_calls,
        ),
        common,
    )

    started = time.perf_counter()
    hand = await evaluate(hand_task, split="test")
    hand_wall = time.perf_counter() - started

    started = time.perf_counter()
    result = await aoptimize(opt_task)
    opt_wall = time.perf_counter() - started
    test = first_rows(data / "test.jsonl", 300)
    majority = max(sum(r["label"] == lab for r in test) for lab in ("positive", "negative")) / len(
        test
    )
    calls = int(result.usage.get("calls", 0))  # backend calls: replays and cache hits are free
    return {
        "hand": hand,
        "hand_wall": hand_wall,
        "result": result,
        "opt_wall": opt_wall,
        "majority": majority,
        "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--max-calls", type=int, default=731)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--num-sets", type=int, default=4)
    parser.add_argument("--mutations", type=int, default=2)
    args = parser.parse_args()
    out = asyncio.run(run(args))
    hand, result = out["hand"], out["result"]
    best = result.scores["best_test"]
    rows = [
        ("always 'positive' (no model)", out["majority"], 0, "-"),
        ("hand prompt, 2 exemplars (this run)", hand.score, 0, hand.invalid),
    ]
    rows += [(name, acc, calls, "-") for name, (acc, calls) in PEERS.items()]
    rows += [
        (
            "promptopt seed (zero-shot, choices)",
            result.scores["seed_test"],
            0,
            result.invalid["seed_test"],
        ),
        ("promptopt exemplars", best, out["calls"], result.invalid["best_test"]),
    ]
    print(
        f"SST-2, SmolLM2-135M-Instruct, 300 test rows; hand prompt took {out['hand_wall']:.0f} s, "
        f"optimization + test {out['opt_wall']:.0f} s"
    )
    print(f"{'method':<52}{'test acc':>9}{'opt calls':>11}{'unparseable':>13}{'x hand':>8}")
    for name, acc, calls, invalid in rows:
        print(f"{name:<52}{acc:>9.3f}{calls:>11}{invalid!s:>13}{acc / hand.score:>8.2f}")
    print(f"best candidate: {result.best_prompt_path}")
    print(
        json.dumps(
            {
                "best_test_acc": round(best, 4),
                "best_optimizer": "exemplars",
                "calls": out["calls"],
                "seed_test_acc": round(result.scores["seed_test"], 4),
                "best_val_acc": round(result.scores["best_val"], 4),
                "unparseable": result.invalid["best_test"],
                "hand_prompt_test_acc": round(hand.score, 4),
                "ratio_to_hand_prompt": round(best / hand.score, 3),
                "ratio_to_best_peer": round(best / PEERS[next(iter(PEERS))][0], 3),
                "target": 0.667,
                "max_calls": args.max_calls,
            }
        )
    )


if __name__ == "__main__":
    main()

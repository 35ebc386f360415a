"""Raw llama-cpp-python runs for ``local_throughput.py``: no promptopt code in the loop.

- :func:`ceiling`: prompts decoded ``CEILING_SEQS`` sequences per ``llama_decode``
  on one context on every core, their common prefix decoded once and shared;
- :func:`neighbour_shift`: what decoding requests together, not alone, does to
  each one's label scores.

Prompts are token lists (with their conversation's length where it matters),
labels are token lists; llama.cpp's low-level API does the rest.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["CEILING_SEQS", "ceiling", "common_prefix", "neighbour_shift"]

CEILING_SEQS = 8


def ceiling(
    path: Path, prompts: list[list[int]], choices: list[list[int]], threads: int
) -> tuple[float, list[int]]:
    """Raw llama.cpp: batches of prompts as sequences of one context; the best label each."""
    import llama_cpp as lc

    n_choices, longest = len(choices), max(len(c) for c in choices)
    cells = CEILING_SEQS * (max(len(p) for p in prompts) + n_choices * longest)
    model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = -(-cells // 256) * 256
    params.n_ubatch = 512
    params.n_seq_max = CEILING_SEQS * (1 + n_choices)
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = True
    ctx = lc.llama_init_from_model(model, params)
    memory = lc.llama_get_memory(ctx)
    vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    batch = lc.llama_batch_init(params.n_batch, 0, 1)

    def add(token: int, pos: int, seq: int, logits: bool) -> int:
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens += 1
        return i

    def logprobs(i: int) -> np.ndarray:
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(vocab,))
        logits = logits.astype(np.float64)
        return logits - np.logaddexp.reduce(logits)

    def decode() -> None:
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    best: list[int] = []
    started = time.perf_counter()
    for start in range(0, len(prompts), CEILING_SEQS):
        group = prompts[start : start + CEILING_SEQS]
        shared = common_prefix(group)  # decoded once, then shared by every sequence's cells
        if shared:
            batch.n_tokens = 0
            for p, t in enumerate(group[0][:shared]):
                add(t, p, 0, False)
            decode()
            for s in range(1, len(group)):
                lc.llama_memory_seq_cp(memory, 0, s, -1, -1)
        batch.n_tokens = 0
        last = [[add(t, shared + p, s, shared + p == len(toks) - 1)
                 for p, t in enumerate(toks[shared:])][-1]
                for s, toks in enumerate(group)]  # fmt: skip
        decode()
        scores = [[float(logprobs(i)[c[0]]) for c in choices] for i in last]
        batch.n_tokens = 0
        at: dict[tuple[int, int], list[int]] = {}
        for s, toks in enumerate(group):
            for c, label in enumerate(choices):
                if len(label) > 1:
                    seq = len(group) + s * n_choices + c
                    lc.llama_memory_seq_cp(memory, s, seq, -1, -1)
                    at[s, c] = [add(t, len(toks) + j, seq, True) for j, t in enumerate(label[:-1])]
        if at:
            decode()
            for (s, c), indices in at.items():
                scores[s][c] += sum(
                    float(logprobs(i)[choices[c][j + 1]]) for j, i in enumerate(indices)
                )
        best += [max(range(n_choices), key=row.__getitem__) for row in scores]
        lc.llama_memory_clear(memory, True)
    seconds = time.perf_counter() - started
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return seconds, best


def neighbour_shift(
    path: Path, prompts: list[tuple[list[int], int]], choices: list[list[int]], threads: int
) -> tuple[float, int, int]:
    """How much batching requests together moves each one's label scores, in raw llama.cpp.

    The first ``CEILING_SEQS`` prompts that share a conversation are decoded alone
    (the conversation in 64-token chunks, then the last message, as the backend
    does) and then their last messages together in one ``llama_decode`` over
    copies of the conversation's cells (as the ceiling does). Returns the largest
    change of a label's log-probability (its first token), the requests whose
    best label changed, and the requests compared.
    """
    import llama_cpp as lc

    first, split = prompts[0]
    group = [t for t, _ in prompts if t[:split] == first[:split]][:CEILING_SEQS]
    model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 2048
    params.n_seq_max, params.kv_unified = len(group), True
    params.n_threads = params.n_threads_batch = threads
    ctx = lc.llama_init_from_model(model, params)
    memory = lc.llama_get_memory(ctx)
    vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    batch = lc.llama_batch_init(params.n_batch, 0, 1)

    def decode(parts: list[tuple[list[int], int, int]]) -> list[np.ndarray]:
        """Decode (tokens, first position, sequence) parts; each one's last label log-probs."""
        batch.n_tokens, last = 0, []
        for tokens, start, seq in parts:
            for j, token in enumerate(tokens):
                i = batch.n_tokens
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + j, 1
                batch.seq_id[i][0], batch.logits[i] = seq, j == len(tokens) - 1
                batch.n_tokens += 1
            last.append(batch.n_tokens - 1)
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        out = []
        for i in last:
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(vocab,))
            logits = logits.astype(np.float64) - np.logaddexp.reduce(logits.astype(np.float64))
            out.append(np.array([logits[c[0]] for c in choices]))
        return out

    def conversation() -> None:
        lc.llama_memory_clear(memory, True)
        for start in range(0, split, 64):
            decode([(first[start : min(start + 64, split)], start, 0)])

    alone = []
    for tokens in group:
        conversation()
        for start in range(split, len(tokens), 64):
            scores = decode([(tokens[start : start + 64], start, 0)])[0]
        alone.append(scores)
    conversation()
    for seq in range(1, len(group)):
        lc.llama_memory_seq_cp(memory, 0, seq, -1, -1)
    together = decode([(t[split:], split, seq) for seq, t in enumerate(group)])
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    shift = max(float(np.max(np.abs(a - b))) for a, b in zip(alone, together, strict=True))
    changed = sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(alone, together, strict=True))
    return shift, changed, len(group)


def common_prefix(group: list[list[int]]) -> int:
    """Tokens every prompt of ``group`` starts with, leaving each at least one of its own."""
    shortest = min(len(p) for p in group) - 1
    n = 0
    while n < shortest and all(p[n] == group[0][n] for p in group):
        n += 1
    return n

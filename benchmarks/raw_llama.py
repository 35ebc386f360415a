"""Raw llama-cpp-python runs for ``local_throughput.py``: no promptopt code in the loop.

- :func:`ceiling`: prompts decoded ``CEILING_SEQS`` sequences per ``llama_decode``
  on one context on every core, their common prefix decoded once and shared;
- :func:`neighbour_shift`: what decoding requests together, not alone, does to
  each one's label scores;
- :func:`alignment_shift`: what a request's place in a batch does to its scores.

Prompts are token lists (with their conversation's length where it matters),
labels are token lists; llama.cpp's low-level API does the rest.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["CEILING_SEQS", "alignment_shift", "ceiling", "common_prefix", "neighbour_shift"]

CEILING_SEQS = 8


class _Raw:
    """One llama.cpp context on a model file and a token batch: add tokens, decode, read.

    Used as a context manager, which frees the batch, the context and the model.
    """

    def __init__(self, path: Path, *, n_ctx: int, n_ubatch: int, n_seq: int, threads: int) -> None:
        import llama_cpp as lc

        from promptopt.llm.backends._amx import model_params

        self.lc = lc
        # as the backend loads it (an AMX build's matmul segfaulted: see _amx)
        self.model = lc.llama_model_load_from_file(str(path).encode(), model_params(lc))
        params = lc.llama_context_default_params()
        params.n_ctx = params.n_batch = n_ctx
        params.n_ubatch, params.n_seq_max, params.kv_unified = n_ubatch, n_seq, True
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lc.llama_init_from_model(self.model, params)
        self.memory = lc.llama_get_memory(self.ctx)
        self.vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(n_ctx, 0, 1)

    def __enter__(self) -> _Raw:
        return self

    def __exit__(self, *_: object) -> None:
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Put one token in the batch; its index there (to read its logits after decoding)."""
        batch, i = self.batch, self.batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens += 1
        return i

    def decode(self) -> None:
        """Decode the batch, then empty it."""
        if self.lc.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed")
        self.batch.n_tokens = 0

    def logprobs(self, i: int) -> np.ndarray:
        """The log-probabilities after the token at batch index ``i``."""
        shape = (self.vocab,)
        logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, i), shape=shape)
        logits = logits.astype(np.float64)
        return logits - np.logaddexp.reduce(logits)

    def copy(self, source: int, target: int) -> None:
        """Sequence ``target`` shares every KV cell of sequence ``source``."""
        self.lc.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def clear(self) -> None:
        self.lc.llama_memory_clear(self.memory, True)


def ceiling(
    path: Path, prompts: list[list[int]], choices: list[list[int]], threads: int
) -> tuple[float, list[int]]:
    """Raw llama.cpp: batches of prompts as sequences of one context; the best label each."""
    n_choices, longest = len(choices), max(len(c) for c in choices)
    cells = CEILING_SEQS * (max(len(p) for p in prompts) + n_choices * longest)
    with _Raw(path, n_ctx=-(-cells // 256) * 256, n_ubatch=512,
              n_seq=CEILING_SEQS * (1 + n_choices), threads=threads) as raw:  # fmt: skip
        best: list[int] = []
        started = time.perf_counter()
        for start in range(0, len(prompts), CEILING_SEQS):
            group = prompts[start : start + CEILING_SEQS]
            shared = common_prefix(group)  # decoded once, then shared by every sequence's cells
            if shared:
                for p, t in enumerate(group[0][:shared]):
                    raw.add(t, p, 0, False)
                raw.decode()
                for s in range(1, len(group)):
                    raw.copy(0, s)
            last = [[raw.add(t, shared + p, s, shared + p == len(toks) - 1)
                     for p, t in enumerate(toks[shared:])][-1]
                    for s, toks in enumerate(group)]  # fmt: skip
            raw.decode()
            scores = [[float(raw.logprobs(i)[c[0]]) for c in choices] for i in last]
            at: dict[tuple[int, int], list[int]] = {}
            for s, toks in enumerate(group):
                for c, label in enumerate(choices):
                    if len(label) > 1:
                        seq = len(group) + s * n_choices + c
                        raw.copy(s, seq)
                        at[s, c] = [raw.add(t, len(toks) + j, seq, True)
                                    for j, t in enumerate(label[:-1])]  # fmt: skip
            if at:
                raw.decode()
                for (s, c), indices in at.items():
                    scores[s][c] += sum(
                        float(raw.logprobs(i)[choices[c][j + 1]]) for j, i in enumerate(indices)
                    )
            best += [max(range(n_choices), key=row.__getitem__) for row in scores]
            raw.clear()
        return time.perf_counter() - started, best


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
    first, split = prompts[0]
    group = [t for t, _ in prompts if t[:split] == first[:split]][:CEILING_SEQS]
    with _Raw(path, n_ctx=2048, n_ubatch=2048, n_seq=len(group), threads=threads) as raw:

        def decode(parts: list[tuple[list[int], int, int]]) -> list[np.ndarray]:
            """Decode (tokens, first position, sequence) parts; each one's label log-probs."""
            last = [[raw.add(t, start + j, seq, j == len(tokens) - 1)
                     for j, t in enumerate(tokens)][-1]
                    for tokens, start, seq in parts]  # fmt: skip
            raw.decode()
            return [np.array([raw.logprobs(i)[c[0]] for c in choices]) for i in last]

        def conversation() -> None:
            raw.clear()
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
            raw.copy(0, seq)
        together = decode([(t[split:], split, seq) for seq, t in enumerate(group)])
    shift = max(float(np.max(np.abs(a - b))) for a, b in zip(alone, together, strict=True))
    changed = sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(alone, together, strict=True))
    return shift, changed, len(group)


def alignment_shift(path: Path, prompt: list[int], filler: list[int], threads: int,
                    offsets: tuple[int, ...] = (0, 1, 4, 8, 16, 32, 48, 64, 128),
                    ) -> tuple[float, dict[str, float]]:  # fmt: skip
    """What a prompt's place in a batch does to its next-token log-probabilities.

    The prompt is decoded alone, then beside filler sequences (``filler`` repeated),
    starting at each offset in ``offsets`` with filler after it up to a whole number of
    64-row blocks; and once at offset 64 with nothing after it (``64 partial``: its rows
    in a block the batch does not fill). Returns the largest change of a log-probability
    between alone and offset 0, and each placement's largest change from offset 0.
    """
    pad = (filler * (1 + 320 // max(len(filler), 1)))[:320]
    with _Raw(path, n_ctx=1024, n_ubatch=512, n_seq=3, threads=threads) as raw:

        def decode(before: int, after: int) -> np.ndarray:
            raw.clear()
            parts = [(pad[:before], 1), (prompt, 0), (pad[:after], 2)]
            rows = [[raw.add(t, j, seq, j == len(tokens) - 1) for j, t in enumerate(tokens)]
                    for tokens, seq in parts]  # fmt: skip
            raw.decode()
            return raw.logprobs(rows[1][-1])

        def whole(offset: int) -> np.ndarray:
            return decode(offset, -(offset + len(prompt)) % 64)

        alone, base = decode(0, 0), whole(0)
        shifts = {str(o): float(np.max(np.abs(whole(o) - base))) for o in offsets}
        shifts["64 partial"] = float(np.max(np.abs(decode(64, 0) - base)))
    return float(np.max(np.abs(alone - base))), shifts


def common_prefix(group: list[list[int]]) -> int:
    """Tokens every prompt of ``group`` starts with, leaving each at least one of its own."""
    shortest = min(len(p) for p in group) - 1
    n = 0
    while n < shortest and all(p[n] == group[0][n] for p in group):
        n += 1
    return n

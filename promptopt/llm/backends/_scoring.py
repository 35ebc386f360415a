"""Score each of a request's ``choices`` by its log-probability under a llama.cpp model.

At temperature 0 a choice-constrained answer is the choice the model finds most
likely. Scoring every choice (the sum of its tokens' log-probabilities after the
prompt) gives that answer and, with it, the numbers a calibrated decision rule
needs: small models lean strongly towards one label, and a per-label offset fitted
on validation data corrects the lean without a single extra model call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["choice_logprobs"]


def _last_logprobs(llama: Any) -> np.ndarray:
    logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),))
    logits = logits.astype(np.float64)
    return logits - np.logaddexp.reduce(logits)


def choice_logprobs(llama: Any, choice_tokens: Sequence[Sequence[int]]) -> list[float]:
    """Log-probability of each token sequence continuing the prompt already evaluated in ``llama``.

    The model's KV cache holds the prompt (``llama.n_tokens`` tokens) and its last
    logits are fresh; every choice is evaluated after it and then dropped again, so
    the prompt's cache is left as it was.
    """
    base = llama.n_tokens
    first = _last_logprobs(llama)
    scores: list[float] = []
    for tokens in choice_tokens:
        total = float(first[tokens[0]])
        for i in range(1, len(tokens)):
            llama.eval([tokens[i - 1]])
            total += float(_last_logprobs(llama)[tokens[i]])
        llama.n_tokens = base  # the next eval drops what the choice added to the cache
        scores.append(total)
    return scores

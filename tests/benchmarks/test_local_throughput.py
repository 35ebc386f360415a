"""``benchmarks/local_throughput.py``'s pieces on the real SmolLM2: its workloads and its ceiling.

The ceiling must score the same prompts as the backend, so it is checked against
the backend's own choice scores: the same label wherever the backend's best label
leads by a clear margin (the batched kernels move logits in the last bits only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from promptopt.llm.backends.local import LocalBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import local_throughput as bench  # noqa: E402
import raw_llama as raw  # noqa: E402

LABELS = ("abbreviation", "description", "entity", "human", "location", "number")


def test_the_demo_workload_is_the_seed_and_four_sets_on_validation() -> None:
    requests = bench.reviews_requests()
    assert len(requests) == 5 * 40
    assert all(r.choices == ("positive", "negative") and r.temperature == 0 for r in requests)
    seed, first_set = requests[0].messages, requests[40].messages
    assert [m.role for m in seed] == ["system", "user"]
    assert [m.role for m in first_set] == ["system", "user", "assistant", "user"]


def test_spread_keeps_every_candidate_and_common_prefix_leaves_a_token() -> None:
    picked = bench.spread(list(range(200)), 40)
    assert len(picked) == 40 and picked[0] == 0 and picked[-1] == 195
    assert raw.common_prefix([[1, 2, 3], [1, 2, 4], [1, 2, 3, 5]]) == 2
    assert raw.common_prefix([[1, 2], [1, 2]]) == 1  # each keeps one token of its own


def test_the_opro_workload_is_one_step_of_one_meta_prompt_with_a_seed_each(
    tmp_path: Path,
) -> None:
    rows = [{"question": f"Who wrote book {i} ?", "label": "human"} for i in range(5)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    requests = bench.opro_requests(tmp_path, 4)
    assert [r.seed for r in requests] == [0, 1, 2, 3]
    assert len({r.messages for r in requests}) == 1  # the step's requests share their prompt
    system, user = requests[0].messages
    assert (system.role, user.role) == ("system", "user")
    assert "Who wrote book 0 ?" in user.content and "Who wrote book 3 ?" not in user.content
    assert "$" not in user.content  # every placeholder filled
    assert all(r.temperature == 1.0 and r.max_tokens == bench.GEN_TOKENS for r in requests)


@pytest.mark.real
def test_the_ceiling_scores_as_the_backend_does(tmp_path: Path) -> None:
    rows = [{"question": q, "label": "human"} for q in (
        "Who wrote Hamlet ?", "How many legs does a spider have ?", "What is a caldera ?",
        "Where is Timbuktu ?", "What does NASA stand for ?", "What is the Mariana Trench ?")]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 30))
    requests = bench.trec_requests(tmp_path, rows=6)[:12]
    backend = LocalBackend(n_contexts=1)
    llama = backend._load(backend._contexts[0])
    prompts = [backend._render(llama, r).tokens for r in requests]
    choices = [backend._choice_tokens(llama, c) for c in LABELS]
    assert any(len(c) > 1 for c in choices)  # continuations are scored too
    responses = [backend.generate(r) for r in requests]
    _, best = raw.ceiling(backend._model_file(), prompts, choices, threads=1)
    for response, label in zip(responses, best, strict=True):
        scores = sorted(response.choice_logprobs, reverse=True)
        if scores[0] - scores[1] > 0.05:
            assert LABELS[label] == response.text


@pytest.mark.real
def test_a_request_decoded_with_no_neighbour_is_not_moved(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"question": f"Who is {i} ?", "label": "human"}) + "\n"
                for i in range(60))
    )  # fmt: skip
    backend = LocalBackend(n_contexts=1)
    llama = backend._load(backend._contexts[0])
    prompt = backend._render(llama, bench.trec_requests(tmp_path, rows=1)[1])
    assert prompt.split > 64  # a conversation of more than one chunk
    choices = [backend._choice_tokens(llama, c) for c in LABELS]
    alone = raw.neighbour_shift(backend._model_file(), [(prompt.tokens, prompt.split)], choices, 1)
    assert alone == (0.0, 0, 1)  # alone twice: bit-identical

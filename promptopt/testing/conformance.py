"""Conformance kits for plugin authors: does an optimizer or a backend keep promptopt's contract?

``check_optimizer(MyOptimizer)`` and ``check_backend(MyBackend, model=...)`` raise an
``AssertionError`` naming the first rule a class breaks, and return quietly when it
keeps them all; call them from a test. promptopt's own optimizers and backends are
held to them by its suite (``tests/optimizers/test_contract.py``,
``tests/llm/backends/test_conformance.py``), so a plugin that passes works wherever
a built-in does.

An optimizer is checked for its shape (a ``name``, a pydantic ``Config`` whose
fields all have defaults, ``propose``/``observe``/``estimate_calls``) and then run
end to end: registered under its name in the ``promptopt.optimizers`` entry-point
group (so install the plugin first: ``pip install -e .``), on a small sentiment
task with fake task and optimizer models, under a call budget. The run has to
finish, and every candidate it proposes has to set all of the seed's parameters
(it may add one, as exemplar selection adds its calibration). A backend is checked for its shape (``provider``, ``agenerate``,
``aclose``, an ``http`` that is an :class:`HttpProvider` if it has one), then sent
a plain request, ``n=2`` samples, eight concurrent requests and a request with
``choices``, directly and through the client, and closed twice. Both kits run
their own event loop (``aio.run``: from a coroutine too, on a helper thread), so
a server the backend talks to must not run on the caller's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from promptopt import aio, plugins
from promptopt.llm.backends._http import HttpProvider
from promptopt.llm.base import Backend
from promptopt.llm.client import LLM
from promptopt.llm.types import LLMRequest, LLMResponse, Message
from promptopt.optimizers.base import OPTIMIZER_METHODS, Optimizer

__all__ = ["check_backend", "check_optimizer"]

_REVIEWS = [
    ("Loved it, works perfectly.", "positive"),
    ("Broke after one day.", "negative"),
    ("Great value and fast shipping.", "positive"),
    ("Terrible, would not buy again.", "negative"),
    ("Exactly what I needed.", "positive"),
    ("The battery died in an hour.", "negative"),
    ("Five stars, my kids adore it.", "positive"),
    ("Cheap plastic, it cracked.", "negative"),
    ("Comfortable and well made.", "positive"),
    ("Customer service ignored me.", "negative"),
    ("Better than the expensive one.", "positive"),
    ("Smells awful and leaks.", "negative"),
]
_TASK = """\
name: conformance
program:
  system: "Is this review positive or negative? Reply with one word."
  user: "{{text}}"
  choices: [positive, negative]
data: {{path: reviews.jsonl, inputs: [text], target: label, split: {{train: 4, val: 4, test: 4}}}}
metric: {{kind: exact}}
models: {{task: "fake:positive", optimizer: "fake:echo", judge: "fake:echo"}}
optimizer: {{name: {name}}}
budget: {{max_calls: {budget}}}
cache: {{policy: "off"}}
"""


def check_optimizer(cls: type, *, budget: int = 80) -> None:
    """Hold the optimizer class ``cls`` to the contract (see the module docstring)."""
    name = getattr(cls, "name", None)
    assert isinstance(name, str) and name, f"{cls.__name__}.name must be a non-empty str"
    config = getattr(cls, "Config", None)
    assert isinstance(config, type) and issubclass(config, BaseModel), (
        f"{name}: Config must be a pydantic BaseModel class"
    )
    try:
        config()
    except Exception as exc:  # the message names the field without a default
        raise AssertionError(f"{name}: every Config field needs a default: {exc}") from exc
    optimizer = cls()
    assert isinstance(cls(config()), cls), f"{name}: the constructor must take a Config"
    lacking = [m for m in OPTIMIZER_METHODS if not callable(getattr(optimizer, m, None))]
    assert not lacking, (
        f"{name}: lacks {', '.join(lacking)} ({OPTIMIZER_METHODS[-1]} is what --dry-run counts)"
    )
    assert isinstance(optimizer, Optimizer), f"{name}: not an Optimizer"
    assert inspect.iscoroutinefunction(optimizer.propose), f"{name}: propose must be async"
    calls = optimizer.estimate_calls(n_train=4, n_val=4)
    assert isinstance(calls, int) and calls >= 0, f"{name}: estimate_calls gave {calls!r}"
    stats = getattr(optimizer, "stats", {})
    assert isinstance(stats, Mapping), f"{name}: stats, if present, must be a mapping"
    _check_plan(name, optimizer)
    racing = getattr(optimizer, "racing", False)
    assert isinstance(racing, bool), f"{name}: racing, if present, must be True or False"
    registered = plugins.optimizers.targets().get(name)
    assert registered is not None, (
        f"{name}: not registered in the {plugins.OPTIMIZERS!r} entry-point group; "
        "install the plugin (pip install -e .) before checking it"
    )
    assert plugins.optimizers.get(name) is cls, f"{name}: registered as {registered!r}"
    candidates, stopped = aio.run(_run_end_to_end(name, budget))
    assert candidates >= 1 and stopped, f"{name}: the run recorded no candidate"


def _check_plan(name: str, optimizer: Any) -> None:
    """``plan_steps``, if present: a list of positive calls, none of them (nor their sum) over
    the calls given, [] when those are 0, and as many steps or fewer as the calls shrink."""
    plan = getattr(optimizer, "plan_steps", None)
    if plan is None:
        return
    assert callable(plan), f"{name}: plan_steps must be a method"
    free = plan(calls=None, n_train=4, n_val=4)
    assert isinstance(free, list) and all(isinstance(c, int) and c > 0 for c in free), (
        f"{name}: plan_steps(calls=None) gave {free!r}, not a list of positive calls"
    )
    assert plan(calls=0, n_train=4, n_val=4) == [], f"{name}: plan_steps(calls=0) plans steps"
    previous = len(free)
    for calls in (sum(free), sum(free) // 2, 5, 1):
        steps = plan(calls=calls, n_train=4, n_val=4)
        assert sum(steps) <= calls, f"{name}: plan_steps(calls={calls}) spends {sum(steps)}"
        assert len(steps) <= previous, f"{name}: plan_steps plans more steps with fewer calls"
        previous = len(steps)


async def _run_end_to_end(name: str, budget: int) -> tuple[int, str]:
    from promptopt.api import aoptimize  # the top layer: only the kit's run needs it
    from promptopt.store import RunStore

    with tempfile.TemporaryDirectory(prefix="promptopt-conformance-") as folder:
        root = Path(folder)
        rows = (json.dumps({"text": text, "label": label}) for text, label in _REVIEWS)
        (root / "reviews.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        task = root / "task.yaml"
        task.write_text(_TASK.format(name=name, budget=budget), encoding="utf-8")
        result = await aoptimize(task, output=root / "runs", probe=False)
        assert result.best is not None, f"{name}: the run chose no best candidate"
        with RunStore.open(result.run_dir) as store:
            candidates = store.candidates()
        seed_keys = set(candidates[0]["params"])
        for candidate in candidates[1:]:  # a proposal may add one (a calibration), never drop
            assert seed_keys <= set(candidate["params"]), (
                f"{name}: a proposal set {sorted(candidate['params'])}, without all of the "
                f"seed's {sorted(seed_keys)}"
            )
        return len(candidates), result.stopped


def check_backend(cls: type, *, model: str = "m", options: Mapping[str, Any] | None = None) -> None:
    """Hold the backend class ``cls`` to the contract, built as ``cls(model=model, **options)``."""
    provider = getattr(cls, "provider", None)
    assert isinstance(provider, str) and provider, f"{cls.__name__}.provider must be a str"
    for method in ("agenerate", "aclose"):
        assert inspect.iscoroutinefunction(getattr(cls, method, None)), (
            f"{provider}: {method} must be an async method"
        )
    http = getattr(cls, "http", None)
    assert http is None or isinstance(http, HttpProvider), (
        f"{provider}: http must be an HttpProvider (or absent, for an in-process backend)"
    )
    backend = cls(model=model, **dict(options or {}))
    assert isinstance(backend, Backend), f"{provider}: not a Backend"
    aio.run(_exercise(provider, backend, model))


def _ask(text: str, **fields: Any) -> LLMRequest:
    return LLMRequest(messages=(Message("user", text),), max_tokens=8, **fields)


def _answer(provider: str, response: Any, n: int = 1) -> None:
    assert isinstance(response, LLMResponse), f"{provider}: agenerate returned {response!r}"
    assert isinstance(response.text, str), f"{provider}: text must be a str"
    assert len(response.texts) == n and response.texts[0] == response.text, (
        f"{provider}: texts must hold the {n} answer(s), the first being text"
    )
    usage = response.usage
    assert usage.prompt_tokens >= 0 and usage.completion_tokens >= 0, f"{provider}: usage"


async def _exercise(provider: str, backend: Any, model: str) -> None:
    try:
        _answer(provider, await backend.agenerate(_ask("Say yes.")))
        _answer(provider, await backend.agenerate(_ask("Pick.", temperature=1.0, n=2, seed=1)), 2)
        many = await asyncio.gather(*(backend.agenerate(_ask(f"Echo {i}.")) for i in range(8)))
        for response in many:
            _answer(provider, response)
        picked = await backend.agenerate(_ask("Yes or no?", choices=("yes", "no")))
        _answer(provider, picked)
        client = LLM(backend, provider=provider, model=model)
        _answer(provider, await client.acomplete(_ask("Through the client.")))
    finally:
        await backend.aclose()
    await backend.aclose()  # closing twice is harmless

"""Checks before a run spends anything: every model's key is set, every endpoint answers.

:func:`check_keys` needs no network. Each distinct model the task names (task,
optimizer, judge) whose provider needs a key (an HTTP provider's own endpoint,
or any model whose ``api_key_env`` is given) must find its variable set, else a
:class:`~promptopt.errors.TaskFileError` names the file, the field, the model,
the endpoint and the variable. :func:`probe_endpoints` then asks each distinct
endpoint once, with a short timeout, for its model list: free, and it proves the
server answers and takes the key. A connection error, timeout or refused key
there is a :class:`~promptopt.errors.ModelUnusableError`; any other answer
(even a 404 from a server without a model list) lets the run start.
In-process providers (``local``, ``vllm``, ``fake``) are never probed; models of one
provider that share a resource are checked together (:func:`check_together`: several
``vllm:`` engines on one GPU need an explicit memory split).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from promptopt.errors import (
    AuthenticationError,
    ConfigError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    ModelUnusableError,
    TaskFileError,
)
from promptopt.llm.health import unusable
from promptopt.llm.models import ModelConfig, backend_class, http_of
from promptopt.llm.probe import probe_model
from promptopt.session import ROLES, role_configs
from promptopt.task.spec import TaskSpec

__all__ = [
    "PROBE_TIMEOUT_S",
    "check_keys",
    "check_together",
    "named_models",
    "preflight",
    "probe_endpoints",
]

PROBE_TIMEOUT_S = 5.0
# What a probe may fail on; anything else it heard back means the server is there.
_PROBE_FAILS = (LLMConnectionError, LLMTimeoutError, AuthenticationError)
_SKIP_HINT = "[pre-flight probe; --no-probe or probe=False skips it]"


async def preflight(
    spec: TaskSpec,
    *,
    probe: bool = True,
    skip: Collection[str] = (),
    task_file: str | Path | None = None,
) -> None:
    """Check the keys of ``spec``'s models, then (unless ``probe`` is False) probe their endpoints.

    ``skip`` names roles whose backend the caller supplies (a fake): they are not checked.
    ``task_file`` is how errors name the task file (default: where ``spec`` was loaded from).
    """
    models = named_models(spec, skip=skip)
    shown = task_file if task_file is not None else getattr(spec, "path", None)
    check_keys(models, task_file=shown)
    check_together(models)
    if probe:
        await probe_endpoints(models.values())


def check_together(models: Mapping[str, ModelConfig]) -> None:
    """Let models of one provider that share a resource refuse a run that cannot fit them all.

    A backend class may define ``check_together([(model name, options), ...])``, which
    raises a ConfigError: ``vllm`` does, for engines that share one GPU.
    """
    by_provider: dict[str, list[ModelConfig]] = {}
    for config in models.values():
        by_provider.setdefault(config.ref.provider, []).append(config)
    for provider, configs in by_provider.items():
        check = (
            getattr(backend_class(provider), "check_together", None) if len(configs) > 1 else None
        )
        if check is not None:
            check([(c.ref.name, c.options) for c in configs])


def named_models(spec: TaskSpec, *, skip: Collection[str] = ()) -> dict[str, ModelConfig]:
    """The distinct models of ``spec``, each under the first role that names it.

    A role that is not given takes the model of the role before it (judge from
    optimizer, optimizer from task), so the first role is where it is written.
    """
    found: dict[str, ModelConfig] = {}
    seen: set[str] = set()
    configs = role_configs(spec)
    for role in ROLES:
        key = configs[role].model_dump_json()
        if role in skip or key in seen:
            continue
        seen.add(key)
        found[role] = configs[role]
    return found


def check_keys(models: Mapping[str, ModelConfig], *, task_file: str | Path | None) -> None:
    """Raise a one-line ConfigError for the first model whose key variable is unset or empty."""
    for role, config in models.items():
        var = config.key_env
        if var is None or os.environ.get(var):
            continue
        reason = (
            f"model {config.model!r} at {', '.join(config.endpoints)!r} needs an API key, "
            f"but the environment variable {var!r} is not set"
        )
        field = f"models.{role}" + (".api_key_env" if config.api_key_env else "")
        if task_file:
            raise TaskFileError(str(task_file), field, reason)
        raise ConfigError(f"{field}: {reason}")


async def probe_endpoints(models: Collection[ModelConfig]) -> None:
    """Probe each distinct endpoint of ``models`` once, concurrently; raise the first failure."""
    distinct: dict[tuple[Any, ...], ModelConfig] = {}
    for config in models:
        if http_of(config.ref.provider) is not None:
            where = (config.ref.provider, config.endpoints, config.api_key_env)
            distinct.setdefault(where, config)
    failures = await asyncio.gather(*(_probe(config) for config in distinct.values()))
    for failure in failures:
        if failure is not None:
            raise failure


async def _probe(config: ModelConfig) -> ModelUnusableError | None:
    try:
        await probe_model(config, timeout=min(config.timeout, PROBE_TIMEOUT_S))
    except _PROBE_FAILS as exc:
        found = unusable(exc, model=config.model, kinds=_PROBE_FAILS)
        assert found is not None  # every kind a probe fails on has a cause
        return ModelUnusableError(
            model=found.model, endpoint=found.endpoint, cause=f"{found.cause} {_SKIP_HINT}"
        )
    except LLMError:  # the server answered (404, 5xx, ...): the run will tell the rest
        return None
    return None

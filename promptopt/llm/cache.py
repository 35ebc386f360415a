"""The on-disk response cache, keyed by the hash of the canonical request.

:class:`ResponseCache` stores successful answers in a ``diskcache.Cache``
folder. Nothing touches the disk at import or construction: the folder is
created and opened on the first :meth:`~ResponseCache.get` or
:meth:`~ResponseCache.set`. Policies:

- ``off``: never read, never write (the folder is never opened);
- ``read``: answer from the cache, never write to it;
- ``readwrite`` (default): answer from the cache, store new answers;
- ``refresh``: never read, always write (re-ask the model, replace old answers).

The folder defaults to ``$PROMPTOPT_CACHE_DIR`` or ``~/.cache/promptopt/llm``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from promptopt.errors import ConfigError
from promptopt.llm.types import LLMResponse

if TYPE_CHECKING:
    import diskcache

__all__ = ["CACHE_DIR_ENV", "CachePolicy", "ResponseCache", "default_cache_dir"]

CachePolicy = Literal["off", "read", "readwrite", "refresh"]
CACHE_DIR_ENV = "PROMPTOPT_CACHE_DIR"

_POLICIES: tuple[str, ...] = get_args(CachePolicy)
_READS = frozenset({"read", "readwrite"})
_WRITES = frozenset({"readwrite", "refresh"})


def default_cache_dir() -> Path:
    """``$PROMPTOPT_CACHE_DIR`` when set, else ``~/.cache/promptopt/llm``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "promptopt" / "llm"


class ResponseCache:
    """Successful LLM answers on disk; safe to share between an event loop and threads."""

    def __init__(
        self, directory: Path | str | None = None, *, policy: CachePolicy = "readwrite"
    ) -> None:
        if policy not in _POLICIES:
            raise ConfigError(f"unknown cache policy {policy!r}; use one of {list(_POLICIES)!r}")
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.policy: CachePolicy = policy
        self._lock = threading.Lock()
        self._store: diskcache.Cache | None = None

    @property
    def reads(self) -> bool:
        return self.policy in _READS

    @property
    def writes(self) -> bool:
        return self.policy in _WRITES

    def _open(self) -> diskcache.Cache:
        with self._lock:
            if self._store is None:
                import diskcache

                try:
                    self._store = diskcache.Cache(str(self.directory))
                except OSError as exc:
                    raise ConfigError(
                        f"cannot open the response cache at {str(self.directory)!r}: {exc}"
                    ) from exc
            return self._store

    def get(self, key: str) -> LLMResponse | None:
        """The stored answer for ``key`` (marked ``cached=True``), or None."""
        if not self.reads:
            return None
        data = self._open().get(key)
        if data is None:
            return None
        return LLMResponse.from_dict(data, cached=True)

    def set(self, key: str, response: LLMResponse) -> None:
        """Store a successful answer (a no-op unless the policy writes)."""
        if not self.writes:
            return
        self._open().set(key, response.to_dict())

    def close(self) -> None:
        """Close the folder; a later get or set opens it again."""
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r}, policy={self.policy!r})"

"""The conftest switch: every test gets its own folders, and no real network call.

An autouse fixture points HOME, the XDG folders and ``PROMPTOPT_CACHE_DIR`` at
the test's ``tmp_path``, removes API keys and ``PROMPTOPT_RECORD`` from the
environment, sets ``PROMPTOPT_BLOCK_NETWORK=1`` and makes any socket connection
to (or name lookup of) a non-loopback host raise ``RuntimeError("unplanned real
call ...")``.
Loopback stays open: tests start real local servers. Run with
``PROMPTOPT_BLOCK_NETWORK=0`` to let a deliberate real call through.

Subfolders add their own fixtures in ``tests/<subdir>/conftest.py``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import pytest

_BLOCK_ENV = "PROMPTOPT_BLOCK_NETWORK"
_SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_LOCAL_HOSTNAME = socket.gethostname().lower()
_blocking_wanted = os.environ.get(_BLOCK_ENV, "1") != "0"


def _is_local_host(host: Any) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): an address to bind a server to
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    name = str(host).split("%", 1)[0].lower()
    if name in _LOOPBACK_NAMES or name in ("", _LOCAL_HOSTNAME):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False  # any other host name would be resolved to the outside world
    return ip.is_loopback or ip.is_unspecified


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and other local families
    return _is_local_host(address[0])


def _refusal(where: Any) -> RuntimeError:
    return RuntimeError(
        f"unplanned real call to {where!r}: tests may only reach loopback servers; "
        f"use a fake (promptopt.llm.fakes) or a local server, or set {_BLOCK_ENV}=0"
    )


def _guard(original: Any) -> Any:
    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise _refusal(address)
        return original(self, address)

    return guarded


def _guard_lookup(original: Any) -> Any:
    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local_host(host):
            raise _refusal(host.decode("ascii", "replace") if isinstance(host, bytes) else host)
        return original(host, *args, **kwargs)

    return guarded


@pytest.fixture(autouse=True)
def _isolated_test_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    for name, folder in (
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
    ):
        (home / folder).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(home / folder))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PROMPTOPT_CACHE_DIR", str(tmp_path / "llm-cache"))
    monkeypatch.delenv("PROMPTOPT_RECORD", raising=False)
    for name in _SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    if _blocking_wanted:
        monkeypatch.setenv(_BLOCK_ENV, "1")
        monkeypatch.setattr(socket.socket, "connect", _guard(socket.socket.connect))
        monkeypatch.setattr(socket.socket, "connect_ex", _guard(socket.socket.connect_ex))
        monkeypatch.setattr(socket, "getaddrinfo", _guard_lookup(socket.getaddrinfo))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """This test's response-cache folder (also ``$PROMPTOPT_CACHE_DIR``); not created yet."""
    return tmp_path / "llm-cache"


# A real model's test takes as long as the machine lets it: on 2 busy cores, minutes. The
# suite's timeout (pyproject, 300 s) guards against hangs; for these tests the guard is wider,
# so a loaded machine slows them without failing them.
REAL_MODEL_TIMEOUT_S = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        real = item.get_closest_marker("real") or item.get_closest_marker("qwen")
        if real and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(REAL_MODEL_TIMEOUT_S))

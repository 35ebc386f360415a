"""The conftest switch: every test gets its own folders, and no real network call.

An autouse fixture points HOME, the XDG folders and ``PROMPTOPT_CACHE_DIR`` at
the test's ``tmp_path``, removes API keys and ``PROMPTOPT_RECORD`` from the
environment, sets ``PROMPTOPT_BLOCK_NETWORK=1`` and makes any socket connection
to a non-loopback address raise ``RuntimeError("unplanned real call ...")``.
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
_blocking_wanted = os.environ.get(_BLOCK_ENV, "1") != "0"


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and other local families
    host = str(address[0]).split("%", 1)[0]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other host name would be resolved to the outside world


def _guard(original: Any) -> Any:
    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise RuntimeError(
                f"unplanned real call to {address!r}: tests may only reach loopback servers; "
                f"use a fake (promptopt.llm.fakes) or a local server, or set {_BLOCK_ENV}=0"
            )
        return original(self, address)

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


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """This test's response-cache folder (also ``$PROMPTOPT_CACHE_DIR``); not created yet."""
    return tmp_path / "llm-cache"

"""The one home of secrets: which names hold them, and how they are kept out of text and data.

- :func:`is_secret_env_name`: whether an environment variable's name marks it as
  holding a secret (it contains KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL, in
  any case); such variables are never handed on (the sandbox's environment).
- :func:`redact_values`: text with every known secret value (an API key, a URL's
  password) replaced by ``***``; the HTTP backends and the pre-flight probe
  scrub their error messages with it.
- :func:`redact_fields`: a copy of JSON-like data with the value of every
  credential-named field (``api_key``, ``Authorization``, ...) replaced by
  ``[redacted]``, wherever it is nested; the run store writes through it.

The two redactions differ on purpose: the first knows the secrets' values and
finds them anywhere in free text; the second knows no value and recognises a
credential by the name of the field that holds it. This module imports nothing
from the rest of the project, so any layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "SECRET_ENV_MARKS",
    "SECRET_FIELDS",
    "is_secret_env_name",
    "redact_fields",
    "redact_values",
]

# Parts of an environment variable's name (upper case) that mark its value as a secret.
SECRET_ENV_MARKS: tuple[str, ...] = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
# Field names (lower case) whose values are credentials; replaced wherever they appear in data.
SECRET_FIELDS: frozenset[str] = frozenset(
    {"api_key", "apikey", "api-key", "x-api-key", "authorization", "proxy-authorization",
     "password", "secret", "client_secret", "access_token", "bearer"}
)  # fmt: skip

_VALUE_MARKER = "***"
_FIELD_MARKER = "[redacted]"


def is_secret_env_name(name: str) -> bool:
    """Whether the environment variable ``name`` may hold a secret (see :data:`SECRET_ENV_MARKS`)."""
    upper = name.upper()
    return any(mark in upper for mark in SECRET_ENV_MARKS)


def redact_values(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _VALUE_MARKER)
    return text


def redact_fields(value: Any) -> Any:
    """A copy of ``value`` (mappings and lists, nested) with every credential field's value
    replaced by ``[redacted]``; tuples become lists, other values are kept as they are."""
    if isinstance(value, Mapping):
        return {
            key: _FIELD_MARKER if str(key).lower() in SECRET_FIELDS else redact_fields(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_fields(item) for item in value]
    return value

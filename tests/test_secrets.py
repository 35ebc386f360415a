"""promptopt.secrets: the one home of secret names and redaction."""

from __future__ import annotations

from promptopt.secrets import is_secret_env_name, redact_fields, redact_values


def test_secret_env_names() -> None:
    assert is_secret_env_name("OPENAI_API_KEY") and is_secret_env_name("hf_token")
    assert is_secret_env_name("DB_PASSWORD") and is_secret_env_name("GOOGLE_CREDENTIALS")
    assert not is_secret_env_name("PATH") and not is_secret_env_name("LANG")


def test_redact_values_replaces_known_values_anywhere() -> None:
    text = "401 for sk-123 at https://u:pw@host"
    assert redact_values(text, ["sk-123", None, "", "pw"]) == "401 for *** at https://u:***@host"


def test_redact_fields_replaces_credential_fields_at_any_depth() -> None:
    data = {"api_key": "k", "model": "m", "headers": ({"Authorization": "Bearer k"}, 1)}
    assert redact_fields(data) == {
        "api_key": "[redacted]",
        "model": "m",
        "headers": [{"Authorization": "[redacted]"}, 1],
    }

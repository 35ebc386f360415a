"""The one exception tree of promptopt.

Every error that promptopt raises on purpose derives from :class:`PromptoptError`.
Backends translate their SDK's exceptions into this tree at their boundary, so
callers never need to import ``openai`` or ``anthropic`` to catch a failure.
The CLI catches ``PromptoptError`` to print one line and exit non-zero; inside,
it is caught only to be passed on as it is (the client lets it through where it
wraps anything else as an ``LLMError``) or remembered (the ``local`` backend
keeps a failed load's error for later requests), never to hide it.

    PromptoptError
    ├── ConfigError                 bad task.yaml, model string, or argument
    │   └── TaskFileError           one field of one task file (file, field, reason)
    ├── DataError                   a dataset file that cannot be read or mapped
    ├── LLMError                    anything that went wrong talking to a model
    │   ├── RetryableError          worth trying again after a pause
    │   │   ├── RateLimitError      HTTP 429; carries retry_after seconds if given
    │   │   ├── ServerError         HTTP 5xx (not a validation failure)
    │   │   ├── LLMTimeoutError     no answer in time (or HTTP 408)
    │   │   ├── LLMConnectionError  connection refused, reset or dropped
    │   │   └── ConflictError       HTTP 409: the request met a conflict (a lock)
    │   ├── AuthenticationError     missing or rejected credentials
    │   ├── BadRequestError         the request itself was refused (4xx, validation 5xx)
    │   │   └── NotFoundError       HTTP 404: no such model (or no such path on the server)
    │   ├── BackendUnavailableError an optional dependency is not installed
    │   │   └── ModelFileError      a pinned model file fails its size or SHA-256 check
    │   ├── UnplannedCallError      a fake or replay saw a request nobody planned for
    │   └── ModelUnusableError      a model that never answered cannot be reached or used
    ├── BudgetExceededError         the run's hard budget would be exceeded
    │   └── ShareSpentError         a stage's share of the budget is spent (the next stage runs)
    ├── StoreError                  the run store cannot be opened, migrated or resumed
    │   └── RunInUseError           another process holds the run (optimizing or resuming it)
    ├── OptimizerError              an optimizer is unknown or misconfigured
    │   └── ReplyParseError         an optimizer model's reply cannot be read (bad JSON)
    │       └── UnchangedValueError a reply's value is the parameter's current one (a no-op)
    ├── SandboxError                the sandbox for proposed code cannot run here at all
    └── ProposedCodeError           proposed code failed, timed out or was killed in the sandbox
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackendUnavailableError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "LLMConnectionError",
    "LLMError",
    "LLMTimeoutError",
    "ModelFileError",
    "ModelUnusableError",
    "NotFoundError",
    "OptimizerError",
    "PromptoptError",
    "ProposedCodeError",
    "RateLimitError",
    "ReplyParseError",
    "RetryableError",
    "ShareSpentError",
    "RunInUseError",
    "SandboxError",
    "ServerError",
    "StoreError",
    "TaskFileError",
    "UnchangedValueError",
    "UnplannedCallError",
]


class PromptoptError(Exception):
    """Root of every error promptopt raises on purpose."""


class ConfigError(PromptoptError):
    """A configuration value is invalid (task file, model string, argument)."""


class TaskFileError(ConfigError):
    """One field of one task file is invalid.

    ``str(err)`` is the one line the CLI prints: ``<file>: <field>: <reason>``.
    """

    def __init__(self, path: str, field: str, reason: str) -> None:
        self.path = path
        self.field = field
        self.reason = reason
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {reason}")


class DataError(PromptoptError):
    """A dataset cannot be read, or its rows do not fit the field mapping."""


class LLMError(PromptoptError):
    """Talking to a model failed.

    ``endpoint`` is the public URL the failure came from, when a backend knows it.
    """

    endpoint: str | None = None


class RetryableError(LLMError):
    """A failure worth retrying after a pause."""

    retry_after: float | None = None


class RateLimitError(RetryableError):
    """The backend answered 429; ``retry_after`` is its Retry-After in seconds, if any."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(RetryableError):
    """The backend answered with a 5xx status."""

    def __init__(
        self,
        message: str = "server error",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class LLMTimeoutError(RetryableError):
    """The backend did not answer in time."""


class LLMConnectionError(RetryableError):
    """The connection was refused, reset or dropped."""


class ConflictError(RetryableError):
    """The backend answered 409: the request collided with another one (a lock); try again."""


class AuthenticationError(LLMError):
    """Credentials are missing or were rejected."""


class BadRequestError(LLMError):
    """The backend refused the request as malformed: a 4xx other than 408, 409 and 429, or a
    5xx whose message names a request-validation failure (llama-cpp-python's server)."""


class NotFoundError(BadRequestError):
    """The backend answered 404: no such model, or no such path (a wrong ``base_url``)."""


class BackendUnavailableError(LLMError):
    """A backend's optional dependency is not installed."""


class ModelFileError(BackendUnavailableError):
    """A pinned model file (assembled from package parts) fails its size or SHA-256 check."""


class UnplannedCallError(LLMError):
    """A fake or replay backend received a request nobody planned for."""


class ModelUnusableError(LLMError):
    """A model cannot be used at all: unreachable, its key rejected, or unknown to its server.

    Raised by the pre-flight probe, and by a client whose model failed so before it
    ever answered; the engine lets it end the run instead of scoring every example 0.
    ``str(err)`` is one line naming the model, the endpoint and the cause.
    """

    def __init__(self, *, model: str, endpoint: str | None, cause: str) -> None:
        self.model = model
        self.endpoint = endpoint
        self.cause = cause
        where = f" at {endpoint!r}" if endpoint else ""
        super().__init__(f"model {model!r}{where} cannot be used: {cause}")


class BudgetExceededError(PromptoptError):
    """Sending one more request could exceed the hard budget of calls, tokens or dollars."""


class ShareSpentError(BudgetExceededError):
    """A stage of ``optimizer: [a, b]`` has spent its share of the budget; the next stage runs."""


class StoreError(PromptoptError):
    """The run store cannot be opened, migrated or resumed."""


class RunInUseError(StoreError):
    """Another live process holds the run's lock; the CLI exits 2, as for a usage error."""


class OptimizerError(PromptoptError):
    """An optimizer is unknown, or its configuration is invalid."""


class ReplyParseError(OptimizerError):
    """A reply of the optimizer model cannot be read (broken JSON, missing fields).

    Optimizers catch it, ask once for a repair, and never let it end a run.
    """


class UnchangedValueError(ReplyParseError):
    """A reply's new value is the parameter's current one: readable, but a no-op."""


class SandboxError(PromptoptError):
    """The sandbox itself cannot run here (no isolation and no opt-out, no interpreter, no folder).

    Never raised for what the candidate code does: that is a ``SandboxResult``.
    """


class ProposedCodeError(PromptoptError):
    """Code proposed for a trainable node failed in the sandbox.

    ``kind`` is the sandbox outcome (``exception``, ``timeout``, ``memory``,
    ``killed`` or ``invalid``), or ``unavailable`` when the sandbox cannot run
    here; the message holds the child's short error.
    """

    def __init__(self, message: str, *, kind: str = "exception") -> None:
        super().__init__(message)
        self.kind = kind

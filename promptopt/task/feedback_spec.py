"""The ``feedback:`` rules of a task file as models: :class:`FeedbackRuleSpec`.

:mod:`promptopt.task.feedback` applies them to failing examples.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from promptopt.task.frozen import NAME_RE, FieldIssue, Frozen, check_regex

__all__ = ["OTHER_RULE", "FeedbackRuleSpec"]

_MATCHERS = (
    "output_matches", "output_lacks", "output_longer_than", "raised", "node_raised",
    "node_calls_over", "llm_calls_over",
)  # fmt: skip
OTHER_RULE = "other"  # the bucket of failures that match no rule


class FeedbackRuleSpec(Frozen):
    """One feedback rule (PROMST's human feedback): an error type, how to recognise it in a
    failing example's output or trace, and the message the optimizer is given about it.

    Every matcher given must hold (they combine with AND); give at least one. A
    failing example belongs to the first rule that matches it, in file order.
    """

    name: str = Field(
        description="The error type, e.g. format or loop: lower-case letters, digits, _ and -.",
        json_schema_extra={"pattern": NAME_RE.pattern},
    )
    message: str = Field(description="What to tell the optimizer about failures of this type.")
    output_matches: str | None = Field(None, description="Regex found in the output.")
    output_lacks: str | None = Field(None, description="Regex not found in the output.")
    output_longer_than: int | None = Field(None, ge=0, description="Output characters above this.")
    raised: bool | None = Field(None, description="true: the program raised (no output).")
    node_raised: str | None = Field(None, description="A traced node of this name raised.")
    node_calls_over: dict[str, int] = Field(
        default_factory=dict,
        description="{node name: n}: the node ran more than n times in one example (a loop).",
    )
    llm_calls_over: int | None = Field(
        None, ge=0, description="The example made more than this many model calls."
    )

    @field_validator("name")
    @classmethod
    def _rule_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"use only lower-case letters, digits, _ and -, got {value!r}")
        if value == OTHER_RULE:
            raise ValueError(f"{OTHER_RULE!r} is the bucket of failures that match no rule")
        return value

    @field_validator("message")
    @classmethod
    def _says_something(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a rule needs a message for the optimizer")
        return value

    @field_validator("output_matches", "output_lacks")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return check_regex(value)

    @model_validator(mode="after")
    def _has_matcher(self) -> FeedbackRuleSpec:
        if not any(getattr(self, name) not in (None, {}) for name in _MATCHERS):
            raise FieldIssue("name", f"rule {self.name!r} has no matcher; give one of "
                             + ", ".join(_MATCHERS))  # fmt: skip
        return self

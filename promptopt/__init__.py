"""promptopt: optimize the prompts, exemplars and code of LLM programs, with LLMs proposing the edits.

The public API, in the order a run uses it:

- :func:`load_task` reads a task file into a validated :class:`TaskSpec`;
- :func:`optimize` (or ``await aoptimize``) runs an optimizer on it and returns an
  :class:`OptimizeResult`; :func:`plan` projects its cost without spending;
  :func:`evaluate` scores a program on a split;
- the LLM layer: :class:`LLM`, :func:`make_llm`, :class:`LLMRequest`, :class:`LLMResponse`,
  :class:`Budget`, :class:`ResponseCache`, and the shipped fakes for tests;
- the traced graph: :func:`param`, :func:`node`, :func:`trace`, :func:`backward`,
  :func:`to_networkx`; LLM-proposed code runs only in a :class:`Sandbox`;
- :class:`RunStore` reads what a run recorded; optimizers implement :class:`Optimizer`.
"""

from promptopt.api import OptimizeResult, Plan, aoptimize, optimize, plan
from promptopt.errors import PromptoptError
from promptopt.evaluate import EvalReport, evaluate
from promptopt.graph import Param, Trace, backward, node, param, to_networkx, trace
from promptopt.llm import (
    LLM,
    Budget,
    FakeBackend,
    LLMRequest,
    LLMResponse,
    Message,
    ReplayBackend,
    ResponseCache,
    ScriptedBackend,
    Usage,
    fake_llm,
    make_llm,
    parse_model,
    scripted_llm,
)
from promptopt.optimizers.base import Candidate, Evaluated, Optimizer, Proposal, SearchState
from promptopt.sandbox import Sandbox, SandboxResult
from promptopt.store import RunStore, list_runs
from promptopt.task import TaskSpec, load_task

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "Candidate",
    "EvalReport",
    "Evaluated",
    "FakeBackend",
    "LLM",
    "LLMRequest",
    "LLMResponse",
    "Message",
    "OptimizeResult",
    "Optimizer",
    "Param",
    "Plan",
    "PromptoptError",
    "Proposal",
    "ReplayBackend",
    "ResponseCache",
    "RunStore",
    "Sandbox",
    "SandboxResult",
    "ScriptedBackend",
    "SearchState",
    "TaskSpec",
    "Trace",
    "Usage",
    "aoptimize",
    "backward",
    "evaluate",
    "fake_llm",
    "list_runs",
    "load_task",
    "make_llm",
    "node",
    "optimize",
    "param",
    "parse_model",
    "plan",
    "scripted_llm",
    "to_networkx",
    "trace",
]

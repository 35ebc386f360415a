"""The machinery the loopback test servers share: lifecycle, answers, faults, counters, CLI.

:class:`LoopbackServer` runs an ``aiohttp.web`` app on 127.0.0.1, in-process
(``async with``), in a background thread (``with``), or as a subprocess (its
module's ``main``). A subclass speaks one provider's wire format: it supplies
its routes, how to read messages out of a request body, and how to shape a
success and an error. Everything else (deterministic answers, fixed latency,
the :class:`~promptopt.testing.faults.FaultPlan`, the ``/_stats`` counters)
lives here, once.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from promptopt.aio import LoopThread
from promptopt.testing.faults import FaultPlan, request_key

__all__ = ["Answer", "Handler", "LoopbackServer", "ServerStats", "run_cli", "spawn"]

Handler = Callable[[dict[str, Any]], "str | Awaitable[str]"]
_RETRY_AFTER_STATUSES = frozenset({429, 503, 529})


@dataclass
class ServerStats:
    """Counters of one server; ``faulted`` counts by fault kind."""

    received: int = 0
    answered: int = 0
    faulted: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0

    @property
    def faulted_total(self) -> int:
        return sum(self.faulted.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "faulted_total": self.faulted_total}


@dataclass(frozen=True)
class Answer:
    """A generated answer: the text, why it ended, and the stop sequence that ended it."""

    text: str
    finish: str  # "stop", "length" or "stop_sequence"
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int


def _words(text: str) -> int:
    return len(text.split())


def _truncate(
    text: str, *, max_tokens: int | None, stop: Sequence[str]
) -> tuple[str, str, str | None]:
    finish, matched = "stop", None
    cut = len(text)
    for sequence in stop:
        at = text.find(sequence) if sequence else -1
        if 0 <= at < cut:
            cut, matched = at, sequence
    if matched is not None:
        text, finish = text[:cut], "stop_sequence"
    if max_tokens is not None and _words(text) > max_tokens:
        text, finish, matched = " ".join(text.split()[:max_tokens]), "length", None
    return text, finish, matched


class LoopbackServer:
    """Base of the loopback servers; see the module docstring.

    Answers are deterministic: ``handler(body)`` when given (sync or async),
    else one of ``choices`` picked by a stable hash of the messages, else an
    echo of the last user message. ``latency`` seconds are awaited before every
    answer. ``api_key``, when set, is the only key accepted (else any is).
    """

    name = "loopback"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        faults: FaultPlan | None = None,
        choices: Sequence[str] = (),
        handler: Handler | None = None,
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.faults = faults or FaultPlan()
        self.choices = tuple(choices)
        self.handler = handler
        self.api_key = api_key
        self.stats = ServerStats()
        self._attempts: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._background: LoopThread | None = None  # the ``with`` form's loop

    # -- what a provider subclass supplies ---------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def conversation(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """The ``(role, text)`` pairs of a request body."""
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        raise NotImplementedError

    def error(
        self, status: int, message: str, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        raise NotImplementedError

    def api_root(self) -> str:
        """The URL an SDK takes as ``base_url``."""
        return self.root_url

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.api_root()

    def reset_stats(self) -> None:
        self.stats = ServerStats()
        self._attempts.clear()

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(self.routes())
        app.add_routes(
            [web.get("/_stats", self._get_stats), web.post("/_stats/reset", self._reset)]
        )
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        addresses = self._runner.addresses  # (host, port, ...) of each listening socket
        assert addresses
        self.port = addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> LoopbackServer:
        self._background = LoopThread(name=f"{self.name}-server")
        try:
            self._background.run(self.start(), timeout=30)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        background, self._background = self._background, None
        if background is None:
            return
        try:
            background.run(self.stop(), timeout=30)
        finally:
            background.close(timeout=30)

    # -- answering ---------------------------------------------------------------------------
    async def answer(
        self, body: dict[str, Any], *, max_tokens: int | None, stop: Sequence[str]
    ) -> Answer:
        """The deterministic answer to ``body``, cut at ``stop`` and ``max_tokens`` words."""
        conversation = self.conversation(body)
        if self.handler is not None:
            text = self.handler(body)
            if inspect.isawaitable(text):
                text = await text
        elif self.choices:
            digest = hashlib.sha256(json.dumps(conversation).encode("utf-8")).digest()
            text = self.choices[int.from_bytes(digest[:8], "big") % len(self.choices)]
        else:
            text = next((content for role, content in reversed(conversation) if role == "user"), "")
        text, finish, matched = _truncate(str(text), max_tokens=max_tokens, stop=stop)
        prompt_tokens = sum(_words(content) for _, content in conversation)
        return Answer(text, finish, matched, prompt_tokens, _words(text))

    async def serve(
        self,
        request: web.Request,
        respond: Callable[[dict[str, Any]], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        """Count, authorize, parse, wait, maybe fault, then ``respond(body)``."""
        stats = self.stats
        stats.received += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            if not self.authorized(request):
                return self.error(401, "invalid or missing API key")
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                return self.error(400, "request body is not JSON")
            if not isinstance(body, dict):
                return self.error(400, "request body must be a JSON object")
            key = request_key(body)
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            fault = self.faults.decide(key, attempt)
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            if fault is not None:
                stats.faulted[fault] = stats.faulted.get(fault, 0) + 1
                return await self._inject(request, fault)
            response = await respond(body)
            if response.status < 400:
                stats.answered += 1
            return response
        finally:
            stats.in_flight -= 1

    async def _inject(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "timeout":
            await asyncio.sleep(self.faults.hang_s)
            return self.error(504, "injected timeout")
        if fault == "drop":
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError
        if fault == "validation":
            return self.error(500, _validation_failure(request.method, request.path))
        status = int(fault)
        headers: dict[str, str] = {}
        retry_after = self.faults.retry_after
        if status in _RETRY_AFTER_STATUSES and retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        return self.error(status, f"injected fault {status}", headers=headers)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.to_dict())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self.stats.to_dict())


def _validation_failure(method: str, path: str) -> str:
    """What llama-cpp-python's server says, with HTTP 500, of a body that fails validation.

    Its route handler wraps every exception as an internal server error whose message is
    ``str(exc)``; for FastAPI's ``RequestValidationError`` that is this text.
    """
    error = {
        "type": "float_parsing",
        "loc": ("body", "temperature"),
        "msg": "Input should be a valid number, unable to parse string as a number",
        "input": "hot",
    }
    return f"1 validation error:\n  {error}\n\n  {method} {path}"


def run_cli(
    server_class: type[LoopbackServer],
    argv: Sequence[str] | None = None,
    *,
    handler: Handler | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; the first stdout line is the base URL for the SDK.

    ``handler`` answers every request (see :class:`LoopbackServer`): a benchmark
    that needs replies of its own shape serves them from its own process this way.
    """
    parser = argparse.ArgumentParser(description=f"Loopback {server_class.name} test server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--faults", default="", help="e.g. 429=0.1,500=0.1,timeout=0.05,drop=0.05")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=0.05, help="seconds; negative: none")
    parser.add_argument("--hang", type=float, default=3.0, help="seconds a 'timeout' fault holds")
    parser.add_argument("--max-faults-per-request", type=int, default=None)
    parser.add_argument("--choice", action="append", default=[], help="answer with one of these")
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: any)")
    args = parser.parse_args(argv)
    plan = FaultPlan.parse(
        args.faults,
        seed=args.seed,
        retry_after=None if args.retry_after < 0 else args.retry_after,
        hang_s=args.hang,
        max_per_request=args.max_faults_per_request,
    )
    server = server_class(
        host=args.host,
        port=args.port,
        latency=args.latency,
        faults=plan,
        choices=args.choice,
        api_key=args.api_key,
        handler=handler,
    )
    asyncio.run(_serve_forever(server))


def spawn(command: Sequence[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server's command line (one that ends in :func:`run_cli`) as a subprocess;
    returns the process and the base URL it printed first. The caller terminates it."""
    proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError(f"the loopback server did not start: {url!r}")
    return proc, url


async def _serve_forever(server: LoopbackServer) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    await server.start()
    print(server.base_url, flush=True)
    try:
        await stopped.wait()
    finally:
        await server.stop()

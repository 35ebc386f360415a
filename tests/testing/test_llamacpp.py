"""The llama.cpp server launcher: finding the GGUF, start-up failures, always stopping the process.

The launcher's lifecycle is tested with stand-in commands (no model needed); the
real server is exercised by ``tests/llm/backends/test_openai_backend.py``.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import threading
import time

import pytest

from promptopt.errors import BackendUnavailableError, LLMError
from promptopt.testing.llamacpp import LlamaCppServer, free_port, smollm2_gguf_path, tied


class StandIn(LlamaCppServer):
    """Runs a small Python script in place of llama.cpp's server."""

    def __init__(self, script: str, **options: object) -> None:
        super().__init__("unused.gguf", **options)  # type: ignore[arg-type]
        self.script = script
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script, str(self.port)]

    def _wait_ready(self) -> None:
        self.process = self._process
        super()._wait_ready()


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'promptopt\[local\]'"):
        smollm2_gguf_path()


def test_early_exit_reports_the_server_output() -> None:
    server = StandIn("import sys; print('cannot load model', file=sys.stderr); sys.exit(3)")
    with pytest.raises(LLMError, match="(?s)code 3.*cannot load model"):
        server.start()
    assert server.process is not None and server.process.returncode == 3


class SlowToSpeak(StandIn):
    """Starts the launcher's clock only once its script has said something.

    Its interpreter alone can take seconds to start on a loaded machine; the test is
    about what the launcher does when the server never answers, not about that race.
    """

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while "still loading" not in self.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        super()._wait_ready()


def test_start_up_timeout_stops_the_process() -> None:
    server = SlowToSpeak("import time; print('still loading', flush=True); time.sleep(60)")
    server.startup_timeout = 1.0
    with pytest.raises(LLMError, match="(?s)within 1.0 s.*still loading"):
        server.start()
    assert server.process is not None and server.process.poll() is not None


def test_ready_server_gets_a_free_port_and_is_stopped() -> None:
    script = (
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    with StandIn(script) as server:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.process is not None and server.process.poll() is None
    assert server.process.poll() is not None


def test_free_port_is_bindable() -> None:
    assert 0 < free_port() < 65536


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_ends_with_the_process_that_started_it_even_one_killed_outright() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "from promptopt.testing.llamacpp import tied\n"
         "child = subprocess.Popen(tied([sys.executable, '-c', 'import time; time.sleep(120)']))\n"
         "print(child.pid, flush=True)\n"
         "time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    server = int(parent.stdout.readline())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until it runs the server's command (exec'd)
        with open(f"/proc/{server}/cmdline", "rb") as handle:
            if b"time.sleep(120)" in handle.read():
                break
        time.sleep(0.05)
    assert _running(server)
    parent.kill()  # SIGKILL: no cleanup of its own runs
    parent.wait()
    deadline = time.monotonic() + 30
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(server)


def test_a_server_started_from_another_thread_is_not_tied_to_that_thread() -> None:
    command = [sys.executable, "-c", "pass"]
    assert tied(command)[-3:] == command and tied(command)[:2] == [sys.executable, "-c"]
    found: list[list[str]] = []
    worker = threading.Thread(target=lambda: found.append(tied(command)))
    worker.start()
    worker.join()
    assert found == [command]  # Linux would end it with the thread

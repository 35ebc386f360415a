"""An AMX build of llama.cpp loads models without its extra buffer types (its AMX matmul
segfaulted on one of our machines); any other build is left as it is."""

from __future__ import annotations

import subprocess
import sys
import types
from typing import Any

import pytest

from promptopt.llm.backends._amx import amx_build, avoid_amx, model_params


class Params:
    use_extra_bufts = True


def fake_llama_cpp(info: bytes) -> Any:
    low = types.SimpleNamespace(llama_model_default_params=Params)
    return types.SimpleNamespace(llama_print_system_info=lambda: info, llama_cpp=low)


AMX = b"CPU : AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 | "
PLAIN = b"CPU : AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | REPACK = 1 | "


def test_an_amx_build_loads_without_extra_buffers_once_patched(caplog):
    module = fake_llama_cpp(AMX)
    assert amx_build(module)
    assert module.llama_cpp.llama_model_default_params().use_extra_bufts  # before
    with caplog.at_level("WARNING"):
        assert avoid_amx(module) and avoid_amx(module)  # a second call patches nothing more
    # said once, with the rebuild that keeps the repack
    assert [r.message.count("-U__AMX_INT8__") for r in caplog.records] == [2]
    assert module.llama_cpp.llama_model_default_params().use_extra_bufts is False
    # wrapped once: the patched default calls the original, not itself
    assert module.llama_cpp.llama_model_default_params.__closure__[0].cell_contents is Params


def test_low_level_loads_take_the_guarded_defaults():
    assert model_params(fake_llama_cpp(AMX)).use_extra_bufts is False
    assert model_params(fake_llama_cpp(PLAIN)).use_extra_bufts is True


@pytest.mark.parametrize("info", [PLAIN, b"CPU : AMX_INT8 = 0 | ", b""])
def test_any_other_build_is_left_as_it_is(info: bytes):
    module = fake_llama_cpp(info)
    assert not amx_build(module) and not avoid_amx(module)
    assert module.llama_cpp.llama_model_default_params is Params


def test_a_module_that_cannot_say_is_left_as_it_is():
    module = types.SimpleNamespace(llama_cpp=types.SimpleNamespace())
    assert not amx_build(module) and not avoid_amx(module)


@pytest.mark.real
def test_the_installed_build_loads_smollm2_and_answers_under_the_guard():
    # in a child process: the AMX crash is a segfault, which would take the test run with it
    code = (
        "import asyncio\n"
        "from promptopt.llm.backends.local import LocalBackend\n"
        "from promptopt.llm.types import LLMRequest, messages\n"
        "b = LocalBackend(n_contexts=1)\n"
        "r = LLMRequest(messages=messages(('user', 'Is the sky blue?')), choices=('yes', 'no'),\n"
        "               temperature=0.0)\n"
        "print(asyncio.run(b.agenerate(r)).text)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in ("yes", "no")

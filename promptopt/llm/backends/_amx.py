"""llama.cpp's AMX path, turned off where the build has it.

llama.cpp compiled with ``-march=native`` on a CPU with AMX (Intel Sapphire Rapids
and later) moves a model's weights into an AMX buffer at load and multiplies there.
On a development machine of this project (2 cores of such a CPU, llama-cpp-python
0.3.36 built there) that path killed the process with a segmentation fault in the
first decode (``ggml_backend_amx_mul_mat``; llama.cpp issue 20824 reports the same
crash as machine-dependent, closed without a fix). A crash takes every run of the
process with it, so where the loaded build reports ``AMX_INT8 = 1``,
:func:`avoid_amx` makes this process load models with llama.cpp's extra buffer types
off: no AMX buffer, and no CPU repack of the weights either (the other extra buffer
type), which costs some decoding speed. ``make install`` builds llama-cpp-python
without AMX (``-U__AMX_INT8__``), which keeps the repack.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["amx_build", "avoid_amx", "model_params"]

_PATCHED = "_promptopt_extra_bufts_off"
logger = logging.getLogger(__name__)


def amx_build(llama_cpp: Any) -> bool:
    """Whether the loaded llama.cpp was built with its AMX matrix multiplication (False
    for a module that cannot say: a stand-in, or a build without that function)."""
    system_info = getattr(llama_cpp, "llama_print_system_info", None)
    if system_info is None:
        return False
    info = system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" in text


def avoid_amx(llama_cpp: Any) -> bool:
    """With an AMX build, make every later model load of this process keep its weights out
    of llama.cpp's extra buffers (``use_extra_bufts`` off, which ``llama_cpp.Llama`` does
    not expose); True when it did. Once per process; a no-op for any other build."""
    low: Any = getattr(llama_cpp, "llama_cpp", None)  # where Llama takes its default params
    if getattr(low, _PATCHED, False):
        return True  # every later load asks again: answered without the system info
    if not amx_build(llama_cpp):
        return False
    default = low.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    setattr(low, _PATCHED, True)
    logger.warning(
        "llama.cpp was built with AMX, whose matmul can crash the process: models load "
        "without its extra buffers (slower); rebuild llama-cpp-python with "
        "CMAKE_ARGS='-DCMAKE_C_FLAGS=-U__AMX_INT8__ -DCMAKE_CXX_FLAGS=-U__AMX_INT8__' to keep "
        "the weights' repack"
    )
    return True


def model_params(llama_cpp: Any) -> Any:
    """llama.cpp's default model params for a load through the low-level API (what
    ``llama_model_load_from_file`` takes), with the extra buffers off for an AMX build."""
    avoid_amx(llama_cpp)
    return llama_cpp.llama_cpp.llama_model_default_params()

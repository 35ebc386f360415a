"""``python -m promptopt.testing.llama_server ARGS``: llama-cpp-python's OpenAI-compatible
server (``python -m llama_cpp.server ARGS``), with llama.cpp's AMX path off where the build
has it, as in the ``local`` backend (:mod:`promptopt.llm.backends._amx`)."""

from __future__ import annotations

import llama_cpp
from llama_cpp.server.__main__ import main

from promptopt.llm.backends._amx import avoid_amx

if __name__ == "__main__":
    avoid_amx(llama_cpp)
    main()

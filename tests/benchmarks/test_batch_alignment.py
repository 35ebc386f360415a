"""``benchmarks/batch_alignment.py`` end to end on the real SmolLM2 (seconds): every
placement is measured and reported, and the reference placement, decoded twice in the
same batch, agrees with itself to the bit (the determinism the response cache relies on).
How far the other placements move is llama.cpp's business, not asserted here."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import batch_alignment  # noqa: E402


def test_every_placement_is_measured_and_the_reference_agrees_with_itself(capsys) -> None:
    batch_alignment.main(["--models", "smollm2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["model", "alone", "@0"] and lines[1].startswith("smollm2")
    result = json.loads(lines[-1])["smollm2"]
    shifts = result["by_offset"]
    assert list(shifts) == ["0", "1", "4", "8", "16", "32", "48", "64", "128", "64 partial"]
    assert shifts["0"] == 0.0
    assert all(math.isfinite(v) and v >= 0 for v in [*shifts.values(), result["alone_vs_batch"]])

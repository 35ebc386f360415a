"""``benchmarks/racing.py`` end to end on fakes: both switches per optimizer, the tables and the
last line (the data and fake models of ``test_quality.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_quality import _data, fake_backends

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import racing  # noqa: E402


def test_racing_on_and_off_print_tables_and_the_json_line(tmp_path, capsys):
    sst2, trec = _data(tmp_path)
    backends = fake_backends()
    final = racing.main(
        ["--jobs", "1", "--val", "24", "--test-rows", "10", "--max-calls", "100",
         "--sst2-data", str(sst2), "--trec-data", str(trec),
         "--workdir", str(tmp_path / "work")],
        backends=backends,
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == final
    for task in ("sst2", "trec"):
        assert set(final[task]) == {"exemplars", "opro"}
        for figures in final[task].values():
            assert {"candidates_ratio", "test_delta"} <= set(figures)
            assert figures["calls_off"] <= 100 and figures["calls_on"] <= 100
            assert figures["candidates_off"] >= 1  # the budget pays for some candidates whole
    text = "\n".join(out)
    assert "exemplars racing on" in text and "opro racing off" in text

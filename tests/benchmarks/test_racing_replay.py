"""``benchmarks/racing_replay.py``: the engine's racing rule replayed on a stored run's
hand-made score table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from promptopt.racing import RaceRule
from promptopt.store import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import racing_replay  # noqa: E402

ROWS = [f"val-{i}" for i in range(40)]
SEED = [1.0 if i % 2 else 0.0 for i in range(40)]  # right on the odd rows


def _run(tmp_path: Path) -> Path:
    store = RunStore.create(tmp_path, task={"name": "replay"}, run_id="off")
    tables = {
        "seed": (0, {}, SEED),
        "worse": (1, {}, [0.0] * 40),  # wrong wherever the seed is right, right nowhere
        "better": (1, {}, [1.0] * 40),  # right wherever the seed is wrong
        "calibrated": (2, {"kind": "calibration"}, [0.0] * 40),  # free: never raced
        "cut": (2, {}, [1.0] * 10),  # a budget stop cut it short
    }
    for name, (step, meta, scores) in tables.items():
        store.add_candidate(name, {"system": name}, parent_id=None, step=step,
                            origin="seed" if name == "seed" else "opro", meta=meta)  # fmt: skip
        store.add_evaluations(
            {"candidate_id": name, "split": "val", "example_id": row, "inputs": {},
             "target": "x", "output": "x", "score": score, "valid": True}
            for row, score in zip(ROWS, scores, strict=False)
        )  # fmt: skip
    store.close()
    return tmp_path / "off"


def test_a_worse_candidate_is_dropped_early_and_a_better_one_never(tmp_path) -> None:
    cands = racing_replay.stored(_run(tmp_path))
    assert [c.id for c in cands] == ["seed", "worse", "better"]
    order = list(ROWS)
    costs, lost, better = racing_replay.replay(cands, RaceRule(confidence=0.95, min_rows=5), order)
    # the leader after 5 rows is the step-mate 'better' (as in the engine), and 'worse' loses
    # all 5 to it: p = 1/32 <= 0.05, dropped; 'better' is scored on every row
    assert costs == [5, 40]
    # against the seed alone it would need 10 rows (5 losses on the odd ones)
    alone = [c for c in cands if c.id != "better"]
    assert racing_replay.replay(alone, RaceRule(confidence=0.95, min_rows=5), order)[0] == [10]
    assert (lost, better) == (0, 1)


def test_the_command_prints_a_row_per_rule_and_the_json_line(tmp_path, capsys) -> None:
    run = _run(tmp_path)
    assert racing_replay.main([str(run), "--confidence", "0.95,0.8", "--orders", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    final = json.loads(out[-1])
    assert set(final["off"]) == {"0.95", "0.8"}
    for figures in final["off"].values():
        assert figures["better"] == 3 and figures["lost"] == 0  # one better candidate, 3 orders
        assert 1.0 < figures["ratio"] < 2.0  # 'worse' costs under 40 rows, 'better' all 40
    assert len(out) == 1 + 2 + 1  # header, a row per rule, JSON

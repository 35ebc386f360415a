"""Racing rules replayed on stored runs: what each confidence would save, and what it would lose.

Reads runs made with ``racing: off`` (every candidate scored on every validation row; for
example ``benchmarks/racing.py --workdir W`` leaves them in ``W/<task>/traces/*racing-off*``)
and races their candidates again, offline, with the engine's own rule
(:class:`promptopt.racing.RaceRule`: a one-sided exact sign test against the leader, looks
every ``min_rows`` rows) at each ``--confidence``. As in the engine, a step's candidates race
together, each against the leader on the rows scored so far (the best so far or a step-mate
still racing), and a survivor of the last look becomes the best so far when its mean is
higher. The free calibrations of the exemplar search are never raced, so they are left out.
Each rule runs over ``--orders`` shuffles of the validation rows.

    python benchmarks/racing_replay.py RUN_DIR [RUN_DIR ...] [--confidence 0.95,0.9,0.8]
        [--min-rows 5] [--orders 30]

Prints, per rule and run, ``ratio``: the rows a candidate is scored on without racing over
the mean rows it costs with racing (the ``candidates_ratio`` of ``benchmarks/racing.py`` when
the budget pays for many candidates), and ``lost``: candidates racing dropped that were better
on the whole validation split than the best their step kept, over the candidates better
than the best before their step (the improvements there were to find). Last line, JSON:
``{run: {confidence: {"ratio", "lost", "better"}}}``. It calls no model: seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from promptopt.racing import RaceRule
from promptopt.store import RunStore


@dataclass(frozen=True)
class Stored:
    """One candidate of a stored run: its step and its score on each validation row."""

    id: str
    step: int
    scores: dict[str, float]

    @property
    def mean(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0


def stored(run: Path) -> list[Stored]:
    """The run's candidates in the order they were made (the seed first), each with its
    validation scores, less the calibrations (free: never raced) and any candidate a budget
    stop cut short. (An exemplar set is not scored on a row it holds as a demonstration.)"""
    store = RunStore.open(run)
    try:
        rows: dict[str, dict[str, float]] = {}
        for e in store.evaluations(split="val"):
            rows.setdefault(e["candidate_id"], {})[e["example_id"]] = float(e["score"])
        found = [Stored(c["id"], c["step"], rows.get(c["id"], {})) for c in store.candidates()
                 if c["meta"].get("kind") != "calibration"]  # fmt: skip
    finally:
        store.close()
    full = max((len(c.scores) for c in found), default=0)
    return [c for c in found if full and len(c.scores) >= full - _DEMO_ROWS]


_DEMO_ROWS = 8  # the most rows an exemplar set can hold out of its own scoring


def replay(cands: list[Stored], rule: RaceRule, order: list[str]) -> tuple[list[int], int, int]:
    """One replay in one row order: the rows each raced candidate cost; how many dropped
    candidates were better on the whole split than the best their step kept (a loss racing
    caused); and how many candidates were better than the best before their step (a
    candidate's mean is over the rows it was scored on)."""
    best = cands[0]
    costs: list[int] = []
    lost = better = 0
    for _, group in groupby(cands[1:], key=lambda c: c.step):
        mates = list(group)
        dropped: dict[str, int] = {}
        for end in rule.looks(len(order))[:-1]:
            seen = order[:end]
            alive = [c for c in mates if c.id not in dropped]
            leader = max([best, *alive], key=lambda c: _mean(c, seen))  # the best wins a tie
            for c in alive:
                theirs = {i: leader.scores[i] for i in seen if i in leader.scores}
                mine = {i: c.scores[i] for i in seen if i in c.scores}
                if c is not leader and rule.verdict(mine, theirs)[0]:
                    dropped[c.id] = sum(i in c.scores for i in seen)
        before = best
        for c in mates:
            costs.append(dropped.get(c.id, len(c.scores)))
            if c.id not in dropped and c.mean > best.mean:
                best = c
        better += sum(c.mean > before.mean for c in mates)
        lost += sum(c.id in dropped and c.mean > best.mean for c in mates)
    return costs, lost, better


def _mean(c: Stored, seen: list[str]) -> float:
    got = [c.scores[i] for i in seen if i in c.scores]
    return sum(got) / len(got) if got else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders made with racing off")
    parser.add_argument("--confidence", default="0.95,0.9,0.8")
    parser.add_argument("--min-rows", type=int, default=RaceRule().min_rows)
    parser.add_argument("--orders", type=int, default=30)
    args = parser.parse_args(argv)
    confidences = [float(c) for c in args.confidence.split(",") if c]
    found: dict[str, dict[str, dict[str, Any]]] = {}
    print(f"{'run':<44}{'confidence':>11}{'ratio':>7}{'lost':>10}")
    for run in args.runs:
        cands = stored(run)
        if len(cands) < 2:
            print(f"{run}: fewer than 2 candidates scored on every validation row", file=sys.stderr)
            return 2
        ids = sorted(cands[0].scores)
        for confidence in confidences:
            rule = RaceRule(confidence=confidence, min_rows=args.min_rows)
            costs: list[int] = []
            lost = better = 0
            for seed in range(args.orders):
                order = list(ids)
                random.Random(f"{seed}:racing").shuffle(order)
                got = replay(cands, rule, order)
                costs += got[0]
                lost, better = lost + got[1], better + got[2]
            whole = sum(len(c.scores) for c in cands[1:]) / (len(cands) - 1)
            ratio = whole / (sum(costs) / len(costs))
            print(f"{run.name[-44:]:<44}{confidence:>11.2f}{ratio:>7.2f}{f'{lost}/{better}':>10}")
            found.setdefault(run.name, {})[str(confidence)] = {
                "ratio": round(ratio, 3), "lost": lost, "better": better}  # fmt: skip
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The report's pictures, drawn by matplotlib as inline SVG text.

- :func:`score_curve`: every candidate's validation score against what had been
  spent when it was known (paid calls, or dollars, or tokens), with the
  best-so-far line (partial candidates, scored on part of validation, left out of it);
- :func:`lineage`: the candidates as a tree by parent link (any optimizer that
  records parents: MCTS, PROMST, OptoPrime, exemplar mutations), laid out by
  depth, the seed at the top, the best candidate's path drawn bold, a partial
  candidate's score starred.

matplotlib is imported on first use with the Agg backend, so importing this
module opens no window and needs no display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from promptopt.report.facts import CandidateFacts, RunFacts

__all__ = ["lineage", "score_curve"]

_BEST, _SEED, _OTHER, _LINE = "#d9480f", "#1971c2", "#868e96", "#2b8a3e"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG sits inline


def score_curve(facts: RunFacts, *, by: str) -> str:
    """Validation score against ``by``: ``calls``, ``usd`` or ``tokens`` spent by then."""
    plt = _pyplot()
    scored = sorted((c for c in facts.candidates if c.val is not None), key=lambda c: _spent(c, by))
    figure, axes = plt.subplots(figsize=(5.4, 3.0))
    xs = [_spent(c, by) for c in scored]
    colours = [_colour(c, facts) for c in scored]
    ys = [c.val for c in scored if c.val is not None]  # every one of them: scored has no None
    axes.scatter(xs, ys, c=colours, s=28, zorder=3, label="candidate")
    best_x: list[float] = []
    best_y: list[float] = []
    running: float | None = None
    for x, y, c in zip(xs, ys, scored, strict=True):
        if not c.partial:  # a mean over part of validation is never the best so far
            running = y if running is None else max(running, y)
        if running is None:
            continue
        best_x.append(x)
        best_y.append(running)
    axes.step(best_x, best_y, where="post", color=_LINE, linewidth=2, label="best so far")
    axes.set_xlabel({"calls": "paid model calls", "usd": "US dollars", "tokens": "tokens"}[by])
    axes.set_ylabel("validation score")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _svg(figure)


def _spent(candidate: CandidateFacts, by: str) -> float:
    return {
        "calls": candidate.calls_by_then,
        "usd": candidate.usd_by_then,
        "tokens": candidate.tokens_by_then,
    }[by]


def _colour(candidate: CandidateFacts, facts: RunFacts) -> str:
    if candidate.id == facts.best_id:
        return _BEST
    return _SEED if candidate.id == facts.seed_id else _OTHER


def lineage(facts: RunFacts) -> str:
    """The candidates' tree by parent link, as SVG."""
    plt = _pyplot()
    known = facts.by_id
    children: dict[str | None, list[CandidateFacts]] = {}
    for c in facts.candidates:
        parent = c.parent_id if c.parent_id in known else None
        children.setdefault(parent, []).append(c)
    position: dict[str, tuple[float, int]] = {}
    next_leaf = [0.0]

    def place(c: CandidateFacts, depth: int) -> float:
        kids = children.get(c.id, [])
        if kids:
            xs = [place(k, depth + 1) for k in kids]
            x = (min(xs) + max(xs)) / 2
        else:
            x, next_leaf[0] = next_leaf[0], next_leaf[0] + 1
        position[c.id] = (x, depth)
        return x

    for root in children.get(None, []):
        place(root, 0)
    on_path = set(_path_to(facts.best_id, known))
    depth = max((d for _, d in position.values()), default=0)
    width = max(next_leaf[0], 1)
    figure, axes = plt.subplots(figsize=(min(2 + 0.55 * width, 14), 1.2 + 0.9 * (depth + 1)))
    for c in facts.candidates:
        if c.parent_id in position and c.id in position:
            (x0, y0), (x1, y1) = position[c.parent_id], position[c.id]
            bold = c.id in on_path and c.parent_id in on_path
            axes.plot([x0, x1], [-y0, -y1], color=_BEST if bold else "#adb5bd",
                      linewidth=2.5 if bold else 1, zorder=1)  # fmt: skip
    for c in facts.candidates:
        x, y = position[c.id]
        axes.scatter([x], [-y], s=160, color=_colour(c, facts), zorder=2, edgecolors="white")
        label = "-" if c.val is None else f"{c.val:.2f}" + ("*" if c.partial else "")
        axes.annotate(label, (x, -y), textcoords="offset points", xytext=(0, 9),
                      ha="center", fontsize=7)  # fmt: skip
    axes.set_yticks([-d for d in range(depth + 1)], [f"depth {d}" for d in range(depth + 1)])
    axes.set_xticks([])
    axes.set_xlim(-0.8, width - 0.2)
    axes.set_ylim(-depth - 0.6, 0.6)
    for side in ("top", "right", "bottom"):
        axes.spines[side].set_visible(False)
    return _svg(figure)


def _path_to(candidate_id: str | None, known: dict[str, CandidateFacts]) -> Sequence[str]:
    path, seen = [], set()
    while candidate_id in known and candidate_id not in seen:
        seen.add(candidate_id)
        path.append(candidate_id)
        candidate_id = known[candidate_id].parent_id
    return path

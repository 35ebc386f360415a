"""``promptopt report RUN``: one self-contained HTML page about a run (no network when viewed).

The page holds, from the run's store: the scores, with the best against the
seed and the majority class on test (``RunFacts.comparison``: wins, losses, the
exact McNemar p-value, a bootstrap interval of the gain, and what they say in
words); the validation score against paid calls and against cost (tokens where
the models are free); the candidates' lineage tree and table (a partial one
marked); the best candidate's parameters as a diff against the seed's; the test
examples the best candidate won and lost against the seed; the workflow graph
of one example (traced programs); and a cost table per model and role. It is
rendered from ``templates/report.html.j2`` by jinja2 with autoescaping; the
pictures are inline SVG from :mod:`promptopt.report.plots`.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from promptopt.errors import ConfigError, StoreError
from promptopt.report.facts import RunFacts
from promptopt.report.files import write_text
from promptopt.report.numbers import score_text
from promptopt.store import RunStore

__all__ = ["render_report", "write_report"]

_TEMPLATES = Path(__file__).with_name("templates")
_MAX_EXAMPLES = 40


def _jinja() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # the report extra is missing
        raise ConfigError(
            "the HTML report needs jinja2 and matplotlib: pip install 'promptopt[report]'"
        ) from exc
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def param_diffs(facts: RunFacts) -> list[dict[str, Any]]:
    """Each parameter of the best candidate: its diff against the seed (an HTML table), if changed."""
    seed, best = facts.seed, facts.best
    if seed is None or best is None:
        return []
    out = []
    for name in sorted(seed.params.keys() | best.params.keys()):
        before, after = _text(seed.params.get(name, "")), _text(best.params.get(name, ""))
        table = difflib.HtmlDiff(wrapcolumn=70).make_table(
            before.splitlines(), after.splitlines(), "seed", "best", context=True, numlines=3
        )
        out.append({"name": name, "changed": before != after, "table": table, "text": after})
    return out


def render_report(store: RunStore) -> str:
    """The report page of the run in ``store``, as HTML text."""
    from promptopt.graph.layout import to_svg
    from promptopt.graph.render import pick_trace
    from promptopt.report import plots

    facts = RunFacts.load(store)
    if not facts.candidates:
        raise StoreError(f"run {facts.run_id!r} has no candidates yet: nothing to report")
    free = all(cost.usd == 0 for cost in facts.costs)
    graph = None
    rows = store.trace_rows()
    if rows:
        graph = to_svg(store.trace(pick_trace(rows, example=None, best=facts.best_id)["id"]).nodes)
    seed, best = facts.seed, facts.best
    return (
        _jinja()
        .get_template("report.html.j2")
        .render(
            facts=facts,
            seed=seed,
            best=best,
            curve_calls=plots.score_curve(facts, by="calls"),
            curve_cost=plots.score_curve(facts, by="tokens" if free else "usd"),
            cost_axis="tokens (the models cost nothing)" if free else "US dollars",
            tree=plots.lineage(facts),
            diffs=param_diffs(facts),
            wins=[e for e in facts.examples if e.won][:_MAX_EXAMPLES],
            losses=[e for e in facts.examples if not e.won][:_MAX_EXAMPLES],
            graph=graph,
            fmt=score_text,
            as_text=_text,
        )
    )


def write_report(
    run: Path | str, *, out: Path | str | None = None, output_dir: Path | str = "traces"
) -> Path:
    """Write the report of ``run`` (a run folder, id or ``latest``) to ``out``; returns the path.

    ``out`` defaults to ``<run>/report.html``.
    """
    with RunStore.open(run, output_dir=output_dir) as store:
        text = render_report(store)
        target = Path(out) if out is not None else store.root / "report.html"
    return write_text(target, text, what="the report")

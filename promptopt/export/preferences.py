"""``export_preferences``: preference data from run stores, level by level, group by group.

For each level asked for (outputs, LLM nodes, optimizer replies, judge verdicts)
the runs' sorted streams are merged, each group (one input, or one meta-prompt) is
mined for pairs (:mod:`promptopt.export.mining`), the filters applied, the rows
built in the chosen format (:mod:`promptopt.export.formats`) and written to the
group's side of the split (:mod:`promptopt.export.splitting`). Only one group is
in memory at a time. Nothing but the run stores is read: no environment variable,
no clock, so the same runs and options give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from promptopt.errors import ConfigError
from promptopt.export.formats import PAIR_FORMATS, Row, input_text, listwise_rows
from promptopt.export.mining import Pair, mine, mine_judged, mine_traces
from promptopt.export.options import ExportOptions, ExportReport
from promptopt.export.sources import (
    RunSource,
    find_runs,
    grouped,
    judge_items,
    keep_run,
    merged,
    optimizer_items,
    output_items,
    trace_items,
    unlinked,
)
from promptopt.export.splitting import RowWriter, is_test, test_path_for

__all__ = ["export_preferences"]

_STREAMS: dict[str, Callable[[RunSource], Iterator[tuple[str, Any]]]] = {
    "output": output_items,
    "node": trace_items,
    "optimizer": optimizer_items,
    "judge": judge_items,
}

Accept = Callable[[Pair], bool]
# each level's miner: one group's items -> its pairs, filtered by ``accept``
_MINERS: dict[str, Callable[[list[Any], ExportOptions, Accept], Iterable[Pair]]] = {
    "output": lambda items, options, accept: mine(
        items, level="output", margin=options.margin, cap=options.max_per_input, accept=accept
    ),
    "optimizer": lambda items, options, accept: mine(
        items, level="optimizer", margin=options.margin, cap=options.max_per_input, accept=accept
    ),
    "node": lambda items, options, accept: mine_traces(
        items,
        margin=options.margin,
        cap=options.max_per_input,
        accept=accept,
        text_of=lambda source, key: source.text_of(key),
    ),
    "judge": lambda items, options, accept: mine_judged(
        items, min_confidence=options.min_confidence, cap=options.max_per_input, accept=accept
    ),
}
_LISTED = ("output", "optimizer")  # levels with ranked lists: whole outputs, optimizer replies


def export_preferences(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    options: ExportOptions | None = None,
    output_dir: str | Path = "traces",
) -> ExportReport:
    """Write the preference data of ``runs`` (ids, prefixes, folders, runs folders) to
    ``out`` (and its ``.test.jsonl`` sibling when ``options.test_fraction`` > 0)."""
    options = options or ExportOptions()
    if options.order == "curriculum" and options.format != "trl":
        raise ConfigError("--order curriculum sorts pairs by margin: use it with --format trl")
    if not runs:
        raise ConfigError("name at least one run (id, prefix, folder, or a folder of runs)")
    sources = [RunSource(folder) for folder in find_runs(runs, output_dir=output_dir)]
    try:
        kept = [s for s in sources if keep_run(s, runs=options.runs, tasks=options.tasks)]
        if not kept:
            raise ConfigError(
                f"no run is left after the run and task filters (of {len(sources)} runs)"
            )
        train = Path(out)
        test = test_path_for(train) if options.test_fraction > 0 else None
        report = ExportReport(str(train), None if test is None else str(test),
                              [s.run_id for s in kept])  # fmt: skip
        if "output" in options.levels():
            report.unlinked = sum(unlinked(s) for s in kept)
        with RowWriter(train, test, curriculum=options.order == "curriculum") as writer:
            for level in options.levels():
                groups = grouped(merged(_STREAMS[level](s) for s in kept))
                for group, items in groups:
                    report.groups += 1
                    report.responses += len(items)
                    side = is_test(group, fraction=options.test_fraction, seed=options.split_seed)
                    for row, rank in _rows(level, group, items, options):
                        writer.write(row, test=side, rank=rank)
                        report.by_level[level] += 1
        report.rows = dict(writer.counts)
        return report
    finally:
        for source in sources:
            source.close()


def _rows(level: str, group: str, items: list[Any], options: ExportOptions) -> Iterable[Row]:
    task, inputs = items[0].source.task, input_text(group)
    if options.format == "listwise":
        if level not in _LISTED:
            return ()  # ranked lists are of scored outputs and optimizer replies
        return listwise_rows(items, level=level, task=task, inputs=inputs)
    pairs = _MINERS[level](items, options, _acceptor(options))
    return PAIR_FORMATS[options.format](pairs, task=task, inputs=inputs)


def _acceptor(options: ExportOptions) -> Accept:
    """The pair filters: chosen score, node, model, same prompt, both requests recorded."""

    def accept(pair: Pair) -> bool:
        if options.min_score is not None and pair.chosen.score < options.min_score:
            return False
        if options.nodes and pair.chosen.node not in options.nodes:
            return False
        calls = [item.source.call(item.prompt_key) for item in (pair.chosen, pair.rejected)]
        if calls[0] is None or calls[1] is None:
            return False
        if options.models and not all(_model_matches(c.model, options.models) for c in calls):
            return False
        return not options.same_prompt or calls[0].messages == calls[1].messages

    return accept


def _model_matches(model: str, wanted: Sequence[str]) -> bool:
    return model in wanted or model.partition(":")[2] in wanted

"""The ``promptopt`` command: parse arguments, call the library, print.

Every PromptoptError becomes one line on stderr and a non-zero exit code
(2 for a bad task file or data, or a run another process holds; 1 for
anything that failed while running);
nothing here knows how optimization works.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from promptopt import aio
from promptopt.errors import (
    ConfigError,
    DataError,
    OptimizerError,
    PromptoptError,
    RunInUseError,
)

__all__ = ["main"]

_NO_PROBE_HELP = "do not ask each model endpoint for its model list before starting"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptopt", description="Optimize the prompts and exemplars of LLM programs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    opt = sub.add_parser("optimize", help="run an optimization described by a task file")
    opt.add_argument("task", help="path to task.yaml")
    opt.add_argument("--resume", metavar="RUN", help="continue a crashed run (run id or folder)")
    opt.add_argument(
        "--dry-run",
        action="store_true",
        help="print the projected calls and cost and spend nothing",
    )
    opt.add_argument("--output", metavar="DIR", help="runs folder (default: the task's output)")
    opt.add_argument("--no-probe", action="store_true", help=_NO_PROBE_HELP)
    ev = sub.add_parser(
        "eval", help="score the seed program, or a run's best candidate, on a split"
    )
    ev.add_argument("task")
    ev.add_argument(
        "--run", metavar="RUN", help="score this run's best candidate instead of the seed"
    )
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--output", metavar="DIR")
    ev.add_argument("--no-probe", action="store_true", help=_NO_PROBE_HELP)
    schema = sub.add_parser("schema", help="print the JSON schema of task.yaml")
    schema.add_argument(
        "--own", action="store_true",
        help="list promptopt's own optimizers and providers only, not installed plugins",
    )  # fmt: skip
    graph = sub.add_parser("graph", help="draw a run's recorded trace as HTML, SVG or DOT")
    graph.add_argument("run", help="run id, prefix, folder, or 'latest'")
    graph.add_argument("--example", metavar="N", help="which example's trace (default: the first)")
    graph.add_argument("--format", default="html", choices=["html", "svg", "dot"])
    graph.add_argument("-o", "--out", metavar="FILE", help="where to write (default: in the run)")
    graph.add_argument("--output", metavar="DIR", default="traces", help="runs folder")
    report = sub.add_parser("report", help="write a run's self-contained HTML report")
    report.add_argument("run", help="run id, prefix, folder, or 'latest'")
    report.add_argument("-o", "--out", metavar="FILE", help="where (default: <run>/report.html)")
    report.add_argument("--output", metavar="DIR", default="traces", help="runs folder")
    show = sub.add_parser("show", help="print a run's scores, wins and losses, and costs")
    show.add_argument("run", help="run id, prefix, folder, or 'latest'")
    show.add_argument("--output", metavar="DIR", default="traces", help="runs folder")
    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--output", metavar="DIR", default="traces")
    _export_parser(sub.add_parser("export", help="training data from runs: pairs and traces"))
    return parser


# export dpo|kto|listwise: the format each writes unless --format says otherwise
_PREFERENCE_KINDS = {
    "dpo": ("trl", "preference pairs in TRL's conversational format"),
    "kto": ("kto", "unpaired rows (prompt, completion, label) for TRL's KTOTrainer"),
    "listwise": ("listwise", "every ranked response per input"),
}
# options given on the command line -> ExportOptions fields (defaults live there)
_FILTERS = {"run_filter": "runs", "task": "tasks", "model": "models", "node": "nodes"}


def _export_parser(export: argparse.ArgumentParser) -> None:
    kinds = export.add_subparsers(dest="kind", required=True)
    quiet = argparse.SUPPRESS  # an option not given leaves ExportOptions' default
    for kind, (fmt, about) in _PREFERENCE_KINDS.items():
        p = kinds.add_parser(kind, help=about, argument_default=quiet)
        p.add_argument("runs", nargs="+", metavar="RUN", help="run ids, folders, or runs folders")
        p.add_argument("-o", "--out", required=True, metavar="FILE", help="the .jsonl to write")
        p.add_argument("--format", choices=["trl", "kto", "listwise"], default=fmt)
        p.add_argument("--level", choices=["output", "node", "optimizer", "judge", "all"])
        p.add_argument("--margin", type=float, help="least score difference (default 0.5)")
        p.add_argument(
            "--min-confidence", type=float, help="judge level: least vote share of the winner"
        )
        p.add_argument("--max-per-input", type=int, help="pairs per input, 0: all (default 10)")
        p.add_argument("--test-fraction", type=float, help="share of inputs for FILE.test.jsonl")
        p.add_argument("--split-seed", type=int)
        p.add_argument("--order", choices=["input", "curriculum"])
        p.add_argument("--run", dest="run_filter", action="append", metavar="GLOB")
        p.add_argument("--task", action="append", metavar="NAME")
        p.add_argument("--model", action="append", metavar="MODEL")
        p.add_argument("--node", action="append", metavar="NAME")
        p.add_argument("--min-score", type=float, help="least score of the chosen side")
        p.add_argument(
            "--same-prompt", action="store_true", help="both sides sent the same messages"
        )
        p.add_argument("--output", metavar="DIR", default="traces", help="runs folder")
    traces = kinds.add_parser("traces", help="a run's traces as JSON lines (and GraphML)")
    traces.add_argument("run", help="run id, prefix, folder, or 'latest'")
    traces.add_argument("-o", "--out", required=True, metavar="FILE")
    traces.add_argument("--graphml", metavar="DIR", help="also one GraphML file per trace here")
    traces.add_argument("--output", metavar="DIR", default="traces", help="runs folder")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ConfigError, DataError, OptimizerError, RunInUseError) as exc:
        print(f"promptopt: error: {exc}", file=sys.stderr)
        return 2
    except PromptoptError as exc:
        print(f"promptopt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("promptopt: interrupted; resume with --resume RUN", file=sys.stderr)
        return 130


def _optimize(args: argparse.Namespace) -> int:
    from promptopt import api
    from promptopt.progress import ConsoleReporter
    from promptopt.report.summary import print_plan, print_summary

    if args.dry_run:
        print_plan(api.plan(args.task))
        return 0
    result = api.optimize(
        args.task,
        resume=args.resume,
        output=args.output,
        reporter=ConsoleReporter(),
        probe=not args.no_probe,
    )
    print_summary(result)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from promptopt.evaluate import evaluate
    from promptopt.report.summary import print_eval

    report = aio.run(
        evaluate(
            args.task,
            run=args.run,
            split=args.split,
            output=args.output,
            probe=not args.no_probe,
        )
    )
    print_eval(report)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from promptopt.task import task_schema

    print(json.dumps(task_schema(own=args.own), indent=2))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from promptopt.report.summary import print_runs
    from promptopt.store import list_runs

    print_runs(list_runs(Path(args.output)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from promptopt.report.html import write_report

    print(write_report(args.run, out=args.out, output_dir=args.output))
    return 0


def _show(args: argparse.Namespace) -> int:
    from promptopt.report.facts import RunFacts
    from promptopt.report.show import print_run
    from promptopt.store import RunStore

    with RunStore.open(args.run, output_dir=args.output) as store:
        print_run(RunFacts.load(store))
    return 0


def _export(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from promptopt.export import ExportOptions, export_preferences, export_traces

    if args.kind == "traces":
        count = export_traces(args.run, args.out, graphml=args.graphml, output_dir=args.output)
        print(
            f"wrote {count} traces to {args.out}" + (f" and {args.graphml}" if args.graphml else "")
        )
        return 0
    given = {
        k: v for k, v in vars(args).items() if k not in ("command", "kind", "runs", "out", "output")
    }
    fields = {_FILTERS.get(k, k): tuple(v) if k in _FILTERS else v for k, v in given.items()}
    try:
        options = ExportOptions.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise ConfigError(f"export option {where!r}: {problem['msg']}") from exc
    report = export_preferences(args.runs, args.out, options=options, output_dir=args.output)
    print("\n".join(report.lines()))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from promptopt.report.graphs import write_graph

    path = write_graph(
        args.run, example=args.example, out=args.out, fmt=args.format, output_dir=args.output
    )
    print(f"wrote {path}")
    return 0


_COMMANDS = {
    "optimize": _optimize,
    "eval": _eval,
    "schema": _schema,
    "runs": _runs,
    "graph": _graph,
    "report": _report,
    "show": _show,
    "export": _export,
}

if __name__ == "__main__":
    sys.exit(main())

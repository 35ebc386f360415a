"""The ``promptopt`` command: parse arguments, call the library, print.

Every PromptoptError becomes one line on stderr and a non-zero exit code
(2 for a bad task file or data, or a run another process holds; 1 for
anything that failed while running);
nothing here knows how optimization works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from promptopt.errors import (
    ConfigError,
    DataError,
    OptimizerError,
    PromptoptError,
    RunInUseError,
)

__all__ = ["main"]


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
    ev = sub.add_parser(
        "eval", help="score the seed program, or a run's best candidate, on a split"
    )
    ev.add_argument("task")
    ev.add_argument(
        "--run", metavar="RUN", help="score this run's best candidate instead of the seed"
    )
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--output", metavar="DIR")
    sub.add_parser("schema", help="print the JSON schema of task.yaml")
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
    return parser


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
        args.task, resume=args.resume, output=args.output, reporter=ConsoleReporter()
    )
    print_summary(result)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from promptopt.evaluate import evaluate
    from promptopt.report.summary import print_eval

    report = asyncio.run(evaluate(args.task, run=args.run, split=args.split, output=args.output))
    print_eval(report)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from promptopt.task import task_schema

    print(json.dumps(task_schema(), indent=2))
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


def _graph(args: argparse.Namespace) -> int:
    from promptopt.graph import write_graph

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
}

if __name__ == "__main__":
    sys.exit(main())

"""The ``promptopt`` command: parse arguments, call the library, print.

Every PromptoptError becomes one line on stderr and a non-zero exit code
(2 for a bad task file or data, 1 for anything that failed while running);
nothing here knows how optimization works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from promptopt.errors import ConfigError, DataError, OptimizerError, PromptoptError

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
    sub.add_parser("schema", help="print the JSON schema of task.yaml")
    graph = sub.add_parser("graph", help="draw a run's recorded trace as HTML, SVG or DOT")
    graph.add_argument("run", help="run id, prefix, folder, or 'latest'")
    graph.add_argument("--example", metavar="N", help="which example's trace (default: the first)")
    graph.add_argument("--format", default="html", choices=["html", "svg", "dot"])
    graph.add_argument("-o", "--out", metavar="FILE", help="where to write (default: in the run)")
    graph.add_argument("--output", metavar="DIR", default="traces", help="runs folder")
    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--output", metavar="DIR", default="traces")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ConfigError, DataError, OptimizerError) as exc:
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

    report = asyncio.run(
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

    print(json.dumps(task_schema(), indent=2))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from promptopt.report.summary import print_runs
    from promptopt.store import list_runs

    print_runs(list_runs(Path(args.output)))
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
}

if __name__ == "__main__":
    sys.exit(main())

"""Fuzzing the task file: every mutation of a shipped task ends in a plan or in one clean line.

Hypothesis takes the task files under ``tasks/`` and mutates them: keys deleted,
unknown keys added, values of the wrong type, huge and odd numbers, wrong paths,
other encodings and stray bytes, and YAML oddities (anchors, tags, several
documents, deep nesting). Each case runs the CLI's ``main`` in-process with
``--dry-run``, which spends nothing, and must return 0 or print exactly one
``promptopt: error: ...`` line naming the file and return 2; never a traceback or
another code. CI runs 1,000 cases (``FUZZ_EXAMPLES=100`` for a quick local run).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from promptopt.cli import main

TASKS = Path(__file__).resolve().parents[1] / "tasks"
SHIPPED = {path.parent.name: path.read_bytes() for path in sorted(TASKS.glob("*/task.yaml"))}
PARSED = {name: yaml.safe_load(raw) for name, raw in SHIPPED.items()}

NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**100, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
)
TEXTS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", " ", "{text}", "{", "}", "{0}", "{text.upper}", "{__class__}", "x" * 5000, "\x00",
         "openai:gpt-4o-mini", "fake:positive", "local:smollm2", "nope:x", "exact", "regex",
         "python", "judge", "exemplars", "optoprime", "workflow:run", "workflow:nope", "a:b:c"]
    ),
)  # fmt: skip
PATHS = st.sampled_from(
    ["missing.jsonl", "../missing.csv", "/", ".", "..", "/dev/null", "/etc/hostname",
     "task.yaml", "workflow.py", "reviews.jsonl", "../tickets/tickets.csv", "../reviews",
     "nul\x00.jsonl", "x" * 300 + ".jsonl", "é.csv", "~/data.jsonl", "data.JSONL", "a.txt",
     "../../../../../../../../etc/passwd", "C:\\data.csv", "file:///x.jsonl", ""]
)  # fmt: skip
ENTRIES = st.sampled_from(
    ["workflow:run", "workflow:nope", "workflow:__name__", "nope:run", "workflow:run.x",
     "workflow", ":run", "x" * 300 + ":run", "tasks.triage.workflow:run", "a.b.c:d"]
)  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXTS, PATHS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXTS, inner, max_size=3)),
    max_leaves=8,
)
YAML_ODDITIES = st.sampled_from(
    [
        "a: &x [1, 2]\nb: *x\n",
        "program: *nowhere\n",
        "name: !!python/object/apply:os.getcwd []\n",
        "name: !!binary aGVsbG8=\n",
        "name: !custom x\n",
        "--- \nname: a\n---\nname: b\n",
        "...\n",
        "? [a, b]\n: c\n",
        "<<: {name: merged}\n",
        "\tname: tabbed\n",
        "name: 2001-12-14t21:59:43.10-05:00\n",
        "seed: 0x1F\nconcurrency: 1_000\n",
        "1: one\nnull: none\ntrue: yes\n",
        "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\n",
        "a: &a [*a]\n",
        "[" * 3000 + "]" * 3000,
        "{" * 3000 + "}" * 3000,
        "- " * 3000 + "x\n",
        "name: '" + "x" * 100_000 + "'\n",
        "[]\n",
        "42\n",
        "~\n",
        "''\n",
        "%YAML 1.1\n---\nname: x\n",
        "%TAG ! tag:example.com,2000:\n---\nname: !x y\n",
        'name: "\\uD800"\n',
        "seed: " + "9" * 5000 + "\n",
        "seed: 1e400\nconcurrency: .inf\n",
        'name: "\\x00"\n',
        "name: |\n  block\n   odd\n",
        "name: >-\n",
        "@name: x\n",
        "name: `x`\n",
        "key: value: other\n",
    ]
)
ENCODINGS = st.sampled_from(["utf-8"] * 8 + ["utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252"])
YAML_BYTES = st.sampled_from(
    [b":", b": ", b"-", b"- ", b" ", b"\n", b"\t", b"'", b'"', b"[", b"]", b"{", b"}", b"&a ",
     b"*a", b"!!str ", b"!x ", b"#", b"%", b"@", b"`", b"|", b">", b"?", b",", b"\\",
     b"\xc3\xa9", b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"\x00", b"\xff", b"~", b"null", b"0x"]
)  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a parsed task file, the root included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _at(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def _mutated_tree(draw: st.DrawFn, name: str) -> bytes:
    tree = copy.deepcopy(PARSED[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths))
        parent = _at(tree, path[:-1]) if path else None
        how = draw(
            st.sampled_from(["delete", "unknown", "replace", "number", "path", "entry", "nest"])
        )
        if how == "delete" and path:
            del parent[path[-1]]
        elif how == "unknown":
            target = _at(tree, path)
            if isinstance(target, dict):
                target[draw(st.one_of(TEXTS, st.sampled_from(["pathh", "kind", "modle"])))] = draw(
                    VALUES
                )
        elif how == "replace" and path:
            parent[path[-1]] = draw(VALUES)
        elif how == "number" and path:
            parent[path[-1]] = draw(NUMBERS)
        elif how == "path":
            section = tree.setdefault("data", {}) if isinstance(tree, dict) else {}
            if isinstance(section, dict):
                section[draw(st.sampled_from(["path", "train", "val", "test"]))] = draw(PATHS)
        elif how == "entry" and isinstance(tree.get("program"), dict):
            tree["program"]["entry"] = draw(st.one_of(TEXTS, ENTRIES))
        elif how == "nest" and path:
            parent[path[-1]] = (
                {"model": parent[path[-1]]} if draw(st.booleans()) else [parent[path[-1]]]
            )
        if not isinstance(tree, dict):
            break
    text = yaml.safe_dump(tree, allow_unicode=draw(st.booleans()), sort_keys=draw(st.booleans()))
    return text.encode(draw(ENCODINGS), errors="replace")


@st.composite
def _mutated_bytes(draw: st.DrawFn, name: str) -> bytes:
    raw = bytearray(SHIPPED[name])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        how = draw(st.sampled_from(["insert", "delete", "flip", "truncate"]))
        if how == "insert":
            raw[at:at] = draw(st.one_of(YAML_BYTES, st.binary(min_size=1, max_size=4)))
        elif how == "delete":
            del raw[at : at + draw(st.integers(1, 40))]
        elif how == "flip" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif how == "truncate":
            del raw[at:]
    return bytes(raw)


@st.composite
def _odd_yaml(draw: st.DrawFn, name: str) -> bytes:
    odd = draw(YAML_ODDITIES)
    text = SHIPPED[name].decode("utf-8")
    where = draw(st.sampled_from(["alone", "before", "after"]))
    text = {"alone": odd, "before": odd + text, "after": text + "\n" + odd}[where]
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def task_files(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SHIPPED)))
    kind = draw(st.sampled_from([_mutated_tree] * 3 + [_mutated_bytes, _odd_yaml]))
    return name, draw(kind(name))


@pytest.fixture(scope="module")
def task_copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "tasks"
    shutil.copytree(TASKS, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _run(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["optimize", str(path), "--dry-run"])
    return code, out.getvalue(), err.getvalue()


def test_the_shipped_task_files_plan_cleanly(task_copies: Path) -> None:
    for name in SHIPPED:
        code, out, err = _run(task_copies / name / "task.yaml")
        assert (code, err) == (0, ""), err
        assert "optimization calls" in out


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1000")),
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(case=task_files())
@example(case=("reviews", b"? [a, b]\n: c\n"))  # the duplicate-key check hashed a list
@example(case=("reviews", b"[" * 3000 + b"]" * 3000))  # 10 s in the YAML scanner, then a crash
@example(case=("triage", SHIPPED["triage"].replace(b"workflow:run", b"workflow:nope")))
@example(case=("triage", SHIPPED["triage"].replace(b"workflow:run", b"x" * 5000)))
@example(case=("triage", SHIPPED["triage"].replace(b"workflow:run", b"x" * 300 + b":run")))
@example(case=("reviews", SHIPPED["reviews"].replace(b"reviews.jsonl", b"x" * 300 + b".jsonl")))
def test_a_mutated_task_file_plans_or_fails_in_one_clean_line(
    task_copies: Path, case: tuple[str, bytes]
) -> None:
    name, raw = case
    path = task_copies / name / "fuzz.yaml"
    path.write_bytes(raw)
    code, out, err = _run(path)
    if code == 0:
        assert err == "" and "optimization calls" in out
        return
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"promptopt: error: {path}"), err
    assert "Traceback" not in err and out == ""
    assert len(lines[0]) <= len(str(path)) + 1000, "a line to read, not a dump of the input"

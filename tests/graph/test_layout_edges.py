"""Edges that skip a row bend around the boxes in their way instead of crossing them."""

from __future__ import annotations

import re

from promptopt.graph import node, trace
from promptopt.graph.layout import HEIGHT, WIDTH, Box, edge_path, layout, to_svg


@node
def topic(message):
    return "topic of " + message


@node
def classify(message, about):
    return "team for " + about


@node
def route(team, about):
    return team + " / " + about


def _points(path: str) -> list[tuple[float, float]]:
    """Points along the path's cubic and straight pieces (absolute M, C, L only)."""
    tokens = re.findall(r"[MCL]|-?\d+(?:\.\d+)?", path)
    points, at, pen = [], 0, (0.0, 0.0)
    while at < len(tokens):
        cmd = tokens[at]
        if cmd == "M":
            pen = (float(tokens[at + 1]), float(tokens[at + 2]))
            at += 3
        elif cmd == "L":
            end = (float(tokens[at + 1]), float(tokens[at + 2]))
            points += [(pen[0] + (end[0] - pen[0]) * t / 20, pen[1] + (end[1] - pen[1]) * t / 20)
                       for t in range(21)]  # fmt: skip
            pen, at = end, at + 3
        else:
            c = [float(v) for v in tokens[at + 1 : at + 7]]
            p0, p1, p2, p3 = pen, (c[0], c[1]), (c[2], c[3]), (c[4], c[5])
            for i in range(21):
                t = i / 20
                points.append(tuple(
                    (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t**2 * c_ + t**3 * d
                    for a, b, c_, d in zip(p0, p1, p2, p3, strict=True)
                ))  # fmt: skip
            pen, at = p3, at + 7
    return points


def _inside(point: tuple[float, float], box: Box) -> bool:
    x, y = point
    return box.x < x < box.x + WIDTH and box.y < y < box.y + HEIGHT


def test_a_long_edge_does_not_cross_the_box_between():
    with trace() as t:
        about = topic("the parcel never came")
        team = classify("the parcel never came", about)
        route(team, about)
    nodes = t.nodes
    boxes = layout(nodes)
    by_name = {n.name: n.index for n in nodes}
    assert boxes[by_name["classify"]].y < boxes[by_name["route"]].y  # the edge skips its row
    for n in nodes:
        for parent in n.parents:
            path, _ = edge_path(boxes[parent], boxes[n.index], boxes)
            others = [b for b in boxes if b.index not in (parent, n.index)]
            crossed = [b.index for b in others if any(_inside(p, b) for p in _points(path))]
            assert not crossed, f"{nodes[parent].name} -> {n.name} crosses {crossed}"
    svg = to_svg(nodes)
    width = int(re.search(r'width="(\d+)"', svg).group(1))
    assert all(x <= width for p in re.findall(r'd="([^"]+)"', svg) for x, _ in _points(p))

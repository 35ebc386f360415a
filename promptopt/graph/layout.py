"""A small layered layout of a trace and its drawing as SVG (no graphviz needed).

Layers follow the longest path from a source, so every edge points down (a source
is moved down to just above its first consumer, which keeps edges short); within
a layer, nodes are ordered by the mean position of their parents (one barycentre
sweep), which keeps most edges short and uncrossed for the small DAGs of one run.
An edge that skips layers and would pass through a box on the way bends around
the boxes in its way, on their right.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from promptopt.graph.records import TraceNode
from promptopt.text import one_line, shorten

__all__ = ["Box", "edge_path", "layout", "to_svg"]

WIDTH, HEIGHT, GAP_X, GAP_Y, MARGIN = 180, 54, 30, 60, 20

# fill and stroke per node look, one table instead of branches
_STYLE = {
    "param": ("#fff3c4", "#b58900"),
    "param-fixed": ("#eeeeee", "#777777"),
    "op": ("#dcecff", "#2a6db0"),
    "op-trainable": ("#ddf5dd", "#2e8b2e"),
    "error": ("#ffd9d9", "#c0392b"),
}


@dataclass(frozen=True, slots=True)
class Box:
    """Where one node is drawn: top-left corner; its look is a key of the style table."""

    index: int
    x: int
    y: int
    look: str


def _look(node: TraceNode) -> str:
    if node.error is not None:
        return "error"
    if node.kind == "param":
        return "param" if node.trainable else "param-fixed"
    return "op-trainable" if node.trainable else "op"


def layout(nodes: list[TraceNode]) -> list[Box]:
    """One box per node, in index order."""
    layer: list[int] = []
    children: dict[int, list[int]] = {}
    for node in nodes:  # index order is topological
        layer.append(1 + max((layer[p] for p in node.parents), default=-1))
        for parent in node.parents:
            children.setdefault(parent, []).append(node.index)
    for node in nodes:  # a source sits just above its first consumer, not at the top
        if not node.parents and node.index in children:
            layer[node.index] = min(layer[c] for c in children[node.index]) - 1
    rows: dict[int, list[int]] = {}
    for node in nodes:
        rows.setdefault(layer[node.index], []).append(node.index)
    slot: dict[int, float] = {}
    for depth in sorted(rows):

        def centre(i: int) -> tuple[float, int]:
            parents = nodes[i].parents
            return (sum(slot[p] for p in parents) / len(parents) if parents else i, i)

        rows[depth].sort(key=centre)
        for at, index in enumerate(rows[depth]):
            slot[index] = at
    widest = max((len(r) for r in rows.values()), default=1)
    boxes = []
    for node in nodes:
        row = rows[layer[node.index]]
        offset = (widest - len(row)) * (WIDTH + GAP_X) / 2
        x = MARGIN + offset + row.index(node.index) * (WIDTH + GAP_X)
        y = MARGIN + layer[node.index] * (HEIGHT + GAP_Y)
        boxes.append(Box(node.index, int(x), int(y), _look(node)))
    return boxes


def edge_path(src: Box, dst: Box, boxes: list[Box]) -> tuple[str, int]:
    """The SVG path of an edge from ``src`` to ``dst``, and the rightmost x it reaches.

    A direct S-curve, unless a box between the two rows overlaps the span the
    curve sweeps: then the curve goes down the right side of those boxes.
    """
    x1, y1 = src.x + WIDTH // 2, src.y + HEIGHT
    x2, y2 = dst.x + WIDTH // 2, dst.y
    left, right = min(x1, x2) - GAP_X // 2, max(x1, x2) + GAP_X // 2
    in_way = [
        b for b in boxes
        if b.index not in (src.index, dst.index) and y1 < b.y < y2
        and b.x < right and b.x + WIDTH > left
    ]  # fmt: skip
    if not in_way:
        mid = (y1 + y2) // 2
        return f"M {x1} {y1} C {x1} {mid}, {x2} {mid}, {x2} {y2}", max(x1, x2)
    side = max(b.x + WIDTH for b in in_way) + GAP_X // 2
    top, bottom = min(b.y for b in in_way), max(b.y + HEIGHT for b in in_way)
    path = (
        f"M {x1} {y1} C {x1} {top}, {side} {y1}, {side} {top} "
        f"L {side} {bottom} C {side} {y2}, {x2} {bottom}, {x2} {y2}"
    )
    return path, side


def _short(value: object, limit: int = 26) -> str:
    return shorten(one_line(value if isinstance(value, str) else repr(value)), limit)


def to_svg(nodes: list[TraceNode]) -> str:
    """The trace drawn as a standalone SVG document."""
    boxes = layout(nodes)
    edges = [
        edge_path(boxes[parent], boxes[node.index], boxes)
        for node in nodes
        for parent in node.parents
    ]
    width = max([b.x + WIDTH for b in boxes] + [x + GAP_X // 2 for _, x in edges] + [0]) + MARGIN
    height = max((b.y for b in boxes), default=0) + HEIGHT + MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker></defs>',
    ]
    for path, _ in edges:
        parts.append(
            f'<path d="{path}" fill="none" stroke="#555" stroke-width="1.3" '
            f'marker-end="url(#arrow)"/>'
        )
    for node, box in zip(nodes, boxes, strict=True):
        fill, stroke = _STYLE[box.look]
        detail = node.error if node.error is not None else node.output
        label = f"{node.name}" + ("" if node.kind == "param" else f" #{node.index}")
        tip = f"{label}\n{detail if isinstance(detail, str) else repr(detail)}"
        parts.append(
            f"<g><title>{escape(tip[:2000])}</title>"
            f'<rect x="{box.x}" y="{box.y}" width="{WIDTH}" height="{HEIGHT}" rx="8" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.6"/>'
            f'<text x="{box.x + WIDTH // 2}" y="{box.y + 21}" text-anchor="middle" '
            f'font-weight="bold">{escape(_short(label))}</text>'
            f'<text x="{box.x + WIDTH // 2}" y="{box.y + 40}" text-anchor="middle" '
            f'fill="#333">{escape(_short(detail))}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)

"""Where each task of a DAG is drawn: longest-path layers as columns, ordered to cross little.

Laid out in Python and drawn as SVG by the server, rather than by a JavaScript layout
library (dagre, elkjs) in the browser: the compiled workflow already holds its longest-path
layers (`CompiledWorkflow.levels`), so what is left is ordering each column, which a few
barycenter sweeps do well for pipeline-shaped graphs; the page then needs no JS to show the
graph, stays readable without scripts, and a 2,000-task run is one SVG the browser draws
without computing anything. The layout depends only on the workflow, so it is cached per
workflow hash by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W = 170
NODE_H = 30
GAP_X = 60
GAP_Y = 12
MARGIN = 10
SWEEPS = 4
"""Barycenter passes (forward, backward, …): more rarely removes another crossing."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    """The SVG path: a cubic curve from the source's right side to the target's left side."""


@dataclass(frozen=True)
class Layout:
    positions: dict[str, tuple[int, int]]
    """The top-left corner of each task's box."""
    edges: list[Edge]
    width: int
    height: int


def _order(levels: list[list[str]], neighbours: Mapping[str, Sequence[str]], index: dict[str, float]) -> None:
    """Sort each column by the mean position of each node's neighbours in the column before it."""
    for column in levels:
        keyed = []
        for pos, name in enumerate(column):
            near = [index[n] for n in neighbours.get(name, ()) if n in index]
            keyed.append((sum(near) / len(near) if near else index.get(name, float(pos)), pos, name))
        keyed.sort()
        column[:] = [name for _, _, name in keyed]
        for pos, name in enumerate(column):
            index[name] = float(pos)


def layout(levels: Sequence[Sequence[str]], depends_on: Mapping[str, Sequence[str]]) -> Layout:
    """Positions for every task in `levels` (from `CompiledWorkflow.levels`) and a path per dependency."""
    columns = [list(level) for level in levels]
    dependents: dict[str, list[str]] = {}
    for name, deps in depends_on.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(name)
    index = {name: float(pos) for column in columns for pos, name in enumerate(column)}
    for sweep in range(SWEEPS):
        if sweep % 2 == 0:
            _order(columns, depends_on, index)
        else:
            _order(columns[::-1], dependents, index)
    tallest = max((len(c) for c in columns), default=0)
    pitch = NODE_H + GAP_Y
    positions: dict[str, tuple[int, int]] = {}
    for col, column in enumerate(columns):
        top = MARGIN + (tallest - len(column)) * pitch // 2
        for row, name in enumerate(column):
            positions[name] = (MARGIN + col * (NODE_W + GAP_X), top + row * pitch)
    edges = []
    for name, deps in depends_on.items():
        if name not in positions:
            continue
        tx, ty = positions[name]
        for dep in deps:
            if dep not in positions:
                continue
            sx, sy = positions[dep]
            x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H // 2, tx, ty + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append(Edge(dep, name, f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"))
    width = 2 * MARGIN + max(len(columns) * (NODE_W + GAP_X) - GAP_X, 0)
    height = 2 * MARGIN + max(tallest * pitch - GAP_Y, 0)
    return Layout(positions, edges, width, height)


__all__ = ["NODE_H", "NODE_W", "Edge", "Layout", "layout"]

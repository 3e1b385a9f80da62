"""The DAG layout of the run page: longest-path columns, few crossings, one path per dependency."""

from __future__ import annotations

from ork_core.web.layout import NODE_H, NODE_W, layout


def crossings(lay, deps: dict[str, list[str]]) -> int:  # type: ignore[no-untyped-def]
    edges = [(lay.positions[d], lay.positions[n]) for n, ds in deps.items() for d in ds]
    count = 0
    for i, (a1, b1) in enumerate(edges):
        for a2, b2 in edges[i + 1:]:
            if a1[0] == a2[0] and b1[0] == b2[0] and (a1[1] - a2[1]) * (b1[1] - b2[1]) < 0:
                count += 1
    return count


def test_columns_follow_the_levels_and_nodes_do_not_overlap() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    lay = layout([["a"], ["b", "c"], ["d"]], deps)
    xs = {n: p[0] for n, p in lay.positions.items()}
    assert xs["a"] < xs["b"] == xs["c"] < xs["d"]
    assert abs(lay.positions["b"][1] - lay.positions["c"][1]) >= NODE_H
    assert len(lay.edges) == 4 and all(e.path.startswith("M") for e in lay.edges)
    assert lay.width >= xs["d"] + NODE_W and lay.height >= max(p[1] for p in lay.positions.values()) + NODE_H


def test_barycenter_ordering_removes_crossings() -> None:
    # two chains given in crossing order: a1→b2, a2→b1
    deps = {"a1": [], "a2": [], "b1": ["a2"], "b2": ["a1"], "c1": ["b1"], "c2": ["b2"]}
    lay = layout([["a1", "a2"], ["b1", "b2"], ["c1", "c2"]], deps)
    assert crossings(lay, deps) == 0


def test_an_empty_workflow_and_a_wide_one() -> None:
    assert layout([], {}).positions == {}
    wide = {"s": [], **{f"t{i}": ["s"] for i in range(2000)}}
    lay = layout([["s"], [f"t{i}" for i in range(2000)]], wide)
    assert len(lay.positions) == 2001 and len(lay.edges) == 2000
    assert len({p for p in lay.positions.values()}) == 2001

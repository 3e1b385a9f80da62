"""Checking a python task without running any of its code: find the module, parse the source.

``ork validate`` must not import the user's module (importing runs it: a module that
connects to a database at import time would do so on every validation). So a module is
found the way the import system would find it, without executing a package's
``__init__``, and a function is looked for among the names the source binds at top level.
Anything the source could bind in a way a parser cannot see (``from x import *``, a module
``__getattr__``, ``globals()``, ``exec``, ``setattr``, replacing ``sys.modules[...]``)
makes the answer "unknown", never a false error.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Source", "find_module_source", "read_source"]

_DYNAMIC_CALLS = frozenset({"globals", "exec", "eval", "setattr", "vars"})
"""Calls at module level that can bind names a parser cannot see."""
MISSING = "missing"
"""`find_module_source`'s answer for a module that cannot be found at all."""


@dataclass(frozen=True)
class Source:
    """What a parse of one file tells about its top-level names."""

    names: frozenset[str] | None
    """Every name the module binds at top level, or None when that cannot be known statically."""
    syntax_error: tuple[int | None, str] | None = None
    defined: tuple[str, ...] = ()
    """Functions and classes defined at top level (``def``/``class``), in order: for messages."""


def _bound_names(tree: ast.Module) -> frozenset[str] | None:
    """Every name `tree` binds at module level (over-inclusive is safe), or None if it cannot be told."""
    names: set[str] = set()
    unknown = False

    def visit(node: ast.AST) -> None:
        nonlocal unknown
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            for sub in ast.walk(node):  # only to see what a body may bind in the module
                if isinstance(sub, ast.Global):
                    names.update(sub.names)
                elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("globals", "exec"):
                    unknown = True
                elif isinstance(sub, ast.Attribute) and sub.attr == "modules":
                    unknown = True
            for decorator in getattr(node, "decorator_list", []):
                visit(decorator)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    unknown = True
                names.add(alias.asname or alias.name.split(".")[0])
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC_CALLS:
            unknown = True
        elif isinstance(node, ast.Attribute) and node.attr in ("modules", "__dict__"):
            unknown = True  # sys.modules[__name__] = …, module.__dict__.update(…)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in tree.body:
        visit(statement)
    if unknown or "__getattr__" in names:
        return None
    return frozenset(names)


def read_source(path: Path, cache: dict[Any, Any]) -> Source:
    """The top-level names of the Python file at `path`, parsed once per validation."""
    key = ("python.source", str(path))
    found = cache.get(key)
    if isinstance(found, Source):
        return found
    try:
        text = path.read_bytes()
        tree = ast.parse(text, filename=str(path))
        defined = tuple(
            n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        )
        found = Source(_bound_names(tree), defined=defined)
    except SyntaxError as exc:
        found = Source(None, (exc.lineno, exc.msg))
    except (OSError, ValueError):
        found = Source(None)  # unreadable or not text: the run reports it
    cache[key] = found
    return found


def find_module_source(name: str, folders: Sequence[Path], cache: dict[Any, Any]) -> Path | str | None:
    """Where module `name` would be imported from, without importing it (or its packages).

    `folders` are searched first, as ork puts them first on ``sys.path`` when the task runs.
    Returns the ``.py`` file, None when the module exists but has no source to read (an
    extension, a namespace package, a built-in), or `MISSING`.
    """
    key = ("python.module", name, tuple(str(f) for f in folders))
    if key in cache:
        found: Path | str | None = cache[key]
        return found
    parts = name.split(".")
    spec = importlib.machinery.PathFinder.find_spec(parts[0], [str(f) for f in folders])
    if spec is None:
        try:
            spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
        except (ImportError, ValueError):
            spec = None
    for depth in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            spec = None
            break
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]), list(spec.submodule_search_locations))
    if spec is None:
        result: Path | str | None = MISSING
    elif spec.origin and spec.origin.endswith(".py") and spec.has_location:
        result = Path(spec.origin)
    else:
        result = None
    cache[key] = result
    return result

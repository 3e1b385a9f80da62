"""The executor contract as the seed writes it, and what @executor says when a class is wrong."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

import ork
from ork import Context, Deferred, ExecutorDefinitionError, executor

REPO = Path(__file__).resolve().parents[1]


class Cfg(BaseModel):
    project: str = "p"


class Out(BaseModel):
    rows: int


def test_seed_interface_is_accepted() -> None:
    @executor
    class MyExecutor:
        def __init__(self, config: Cfg):
            self.config = config

        def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Out:
            return Out(rows=1)

    spec = MyExecutor.__ork_executor__  # type: ignore[attr-defined]
    assert spec.config_model is Cfg
    assert spec.output_model is Out
    assert not spec.run_is_async
    assert spec.optional == frozenset()


def test_async_run_and_optional_methods_are_detected() -> None:
    @executor
    class Async:
        def __init__(self, config: Cfg):
            pass

        async def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Out | Deferred:
            return Out(rows=0)

        def cancel(self, ctx: Context) -> None:
            pass

        def close(self) -> None:
            pass

        def adopt(self, key: str, ctx: Context) -> Deferred | None:
            return None

    spec = Async.__ork_executor__  # type: ignore[attr-defined]
    assert spec.run_is_async
    assert spec.output_model is Out
    assert spec.optional == {"cancel", "close", "adopt"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("class E:\n    def __init__(self, config: Cfg): pass\n", "no run method"),
        ("class E:\n    def run(self, a, b, c): pass\n", "no __init__"),
        ("class E:\n    def __init__(self, config): pass\n    def run(self, a, b, c): pass\n", "has no annotation"),
        ("class E:\n    def __init__(self, config: dict): pass\n    def run(self, a, b, c): pass\n", "not a pydantic BaseModel"),
        ("class E:\n    def __init__(self, config: Cfg): pass\n    def run(self, config_file): pass\n", "must accept (config_file, ctx, upstream)"),
        ("class E:\n    def __init__(self, a: Cfg, b: Cfg): pass\n    def run(self, a, b, c): pass\n", "exactly one argument"),
        ("class E:\n    def __init__(self, config: 'Missing'): pass\n    def run(self, a, b, c): pass\n", "cannot resolve"),
    ],
)
def test_wrong_shapes_are_explained(source: str, message: str) -> None:
    namespace: dict[str, object] = {"Cfg": Cfg}
    exec(source, namespace)
    with pytest.raises(ExecutorDefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        executor(namespace["E"])


def test_decorating_a_function_is_refused() -> None:
    with pytest.raises(ExecutorDefinitionError, match="must decorate a class"):
        executor(lambda: None)  # type: ignore[arg-type]


def test_public_api_all_is_exact() -> None:
    """`ork.__all__` lists exactly the public names defined in ork/__init__.py."""
    tree = ast.parse((REPO / "ork" / "__init__.py").read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert set(ork.__all__) == (imported - {"annotations", "TYPE_CHECKING", "Any"}) | {"__version__"}
    for name in ork.__all__:
        assert hasattr(ork, name), name


def test_kickoff_uncertain_is_public_and_a_task_error() -> None:
    """Executors raise it like TaskError; `except TaskError` in user code still catches it."""
    assert "KickoffUncertain" in ork.__all__
    assert issubclass(ork.KickoffUncertain, ork.TaskError) and issubclass(ork.KickoffUncertain, ork.OrkError)


def test_from_ork_import_executor_context_works() -> None:
    namespace: dict[str, object] = {}
    exec("from ork import executor, Context", namespace)
    assert namespace["executor"] is executor

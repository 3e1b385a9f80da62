"""`ork validate` finds what used to fail only at run time, through executors' static `check`.

Each case goes through `ork validate` (exit 1) and `ork run` (exit 2, nothing runs), and no
user code is imported to find it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from orkhelpers import Cli, write
from ork import ExecutorDefinitionError, executor
from ork_core.python_static import read_source

TASKS = "import os\n\ndef extract() -> int:\n    return 1\n\nclass Loader:\n    pass\n"
EXPLODES = "raise SystemExit('imported during validation')\n"


def both(cli: Cli, project: Path, workflow: str) -> str:
    """The problems `ork validate` reports, checked to be the ones `ork run` refuses to start with."""
    wf = write(project / "wf.yaml", workflow)
    validated = cli("validate", str(wf), cwd=project)
    assert validated.code == 1, validated.out + validated.err
    ran = cli("run", str(wf), cwd=project)
    assert ran.code == 2, ran.out + ran.err
    assert "Traceback" not in validated.err + ran.err
    assert ran.out == ""  # no run was created
    assert ran.err == validated.err
    return validated.err


@pytest.fixture
def proj(project: Path, fresh_modules: None) -> Path:
    write(project / "ork.yaml", "")
    write(project / "tasks.py", TASKS)
    write(project / "pkg" / "__init__.py", EXPLODES)
    write(project / "pkg" / "jobs.py", EXPLODES + "def load():\n    pass\n")
    return project


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("file: nope.py\n    function: extract", "wf.yaml:4: tasks.a.file: 'nope.py' not found (looked for {project}/nope.py)"),
        (
            "file: tasks.py\n    function: extrct",
            "wf.yaml:5: tasks.a.function: tasks.py has no function 'extrct' (did you mean 'extract'?); it defines: extract, Loader",
        ),
        ("module: nosuch\n    function: f", "wf.yaml:4: tasks.a.module: module 'nosuch' not found (searched {project} and installed packages)"),
        ("module: pkg.nosuch\n    function: f", "wf.yaml:4: tasks.a.module: module 'pkg.nosuch' not found"),
        ("module: pkg.jobs\n    function: lode", "wf.yaml:5: tasks.a.function: pkg.jobs has no function 'lode' (did you mean 'load'?)"),
        ("module: json\n    function: dumpz", "wf.yaml:5: tasks.a.function: json has no function 'dumpz' (did you mean 'dump', 'dumps'?)"),
        ("file: bad.py\n    function: f", "wf.yaml:4: tasks.a.file: bad.py:2: syntax error: "),
        ("file: tasks.py\n    function: extract\n    config_file: gone.yaml", "wf.yaml:6: tasks.a.config_file: config file 'gone.yaml' not found"),
    ],
)
def test_python_tasks_are_checked_without_importing(cli: Cli, proj: Path, task: str, expected: str) -> None:
    write(proj / "bad.py", "def f():\n    return (\n")
    err = both(cli, proj, f"name: w\ntasks:\n  a:\n    {task}\n")
    assert expected.format(project=proj) in err, err
    assert "imported during validation" not in err


@pytest.mark.parametrize(
    "source",
    [
        "from os.path import join as f\n",                     # a re-export
        "f = print\n",                                          # an assignment
        "from os.path import *\n",                              # a star-import: cannot tell
        "def __getattr__(name):\n    return print\n",          # a module __getattr__: cannot tell
        "globals()['f'] = print\n",                             # dynamic: cannot tell
        "try:\n    from fast import f\nexcept ImportError:\n    def f():\n        pass\n",
        "if True:\n    def f():\n        pass\n",
        "def make():\n    global f\n    f = print\nmake()\n",
    ],
)
def test_functions_the_parser_cannot_rule_out_are_not_errors(cli: Cli, proj: Path, source: str) -> None:
    write(proj / "dyn.py", source)
    wf = write(proj / "wf.yaml", "name: w\ntasks:\n  a: {file: dyn.py, function: f}\n")
    result = cli("validate", str(wf), cwd=proj)
    assert result.code == 0, result.err


def test_a_package_is_not_imported_to_find_its_module(cli: Cli, proj: Path) -> None:
    wf = write(proj / "wf.yaml", "name: w\ntasks:\n  a: {module: pkg.jobs, function: load}\n")
    result = cli("validate", str(wf), cwd=proj)
    assert result.code == 0, result.err
    import sys

    assert "pkg" not in sys.modules and "pkg.jobs" not in sys.modules


def test_another_interpreters_module_is_not_looked_for(cli: Cli, proj: Path) -> None:
    """`python:` may have packages ork's interpreter lacks: only the run can tell."""
    import sys

    wf = write(
        proj / "wf.yaml",
        f"name: w\ntasks:\n  a: {{module: only_there, function: f, isolation: process, python: {sys.executable}}}\n",
    )
    assert cli("validate", str(wf), cwd=proj).code == 0


def test_a_file_named_by_many_tasks_is_parsed_once(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ork_core import python_static
    from ork_core.plugins import build_plugin_manager
    from ork_core.project import Project
    from ork_core.workflow import load_workflow

    calls: list[Path] = []
    real = python_static.ast.parse

    def counting(source: bytes, filename: str = "<unknown>", *args: object, **kwargs: object) -> object:
        calls.append(Path(filename))
        return real(source, filename, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(python_static.ast, "parse", counting)
    body = "".join(f"  t{i}: {{file: tasks.py, function: extract}}\n  m{i}: {{module: tasks, function: extract}}\n" for i in range(200))
    wf = write(proj / "wf.yaml", "name: w\ntasks:\n" + body)
    load_workflow(wf, Project.load(proj, build_plugin_manager()))
    assert len(calls) == 1 and calls[0].name == "tasks.py", calls  # 400 tasks, by file and by module
    assert read_source(proj / "tasks.py", {}).names is not None


# -- the mechanism, for any executor ------------------------------------------------------------

EXECUTORS = '''
from typing import Any
from pydantic import BaseModel, ConfigDict
from ork import Context, executor, load_task_config

class Config(BaseModel):
    pass

class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str
    repeat: int = 1

@executor(task_config=Task)
class Echo:
    """Reads its config_file as task keys, and says so in check()."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @staticmethod
    def check(task, where):
        settings, problems = where.task_config(Task)
        if settings is not None:
            problems += where.templates(settings.message, "message")
        return problems

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Any:
        return load_task_config(Task, config_file, ctx).message

@executor(task_config=Task)
class Broken:
    """A check that raises is a problem, not a crash."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def check(cls, task, where):
        raise RuntimeError("oops")

    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Any:
        return None
'''


@pytest.fixture
def echo(project: Path, fresh_modules: None) -> Path:
    write(project / "ork.yaml", "executors:\n  echo: {type: 'echoes:Echo'}\n  broken: {type: 'echoes:Broken'}\n")
    write(project / "echoes.py", EXECUTORS)
    return project


@pytest.mark.parametrize(
    ("config", "task", "expected"),
    [
        ("message: [\n", "", "c.yaml:2: invalid YAML"),
        ("repeat: many\n", "message: hi", "c.yaml:1: repeat: expected an integer, got the string 'many'"),
        ("mesage: hi\n", "", "c.yaml:1: mesage: unknown key 'mesage' (did you mean 'message'?)"),
        ("repeat: 2\n", "", "c.yaml:1: message: required field is missing"),
        ("repeat: 2\n", "message: 'hello {{ params.x '", "wf.yaml:6: tasks.a.message: template syntax error on line 1: "),
        ("message: '{% if %}'\n", "", "c.yaml:1: message: template syntax error on line 1:"),
    ],
)
def test_config_file_contents_are_checked_by_the_executor(cli: Cli, echo: Path, config: str, task: str, expected: str) -> None:
    write(echo / "c.yaml", config)
    extra = f"\n    {task}" if task else ""
    err = both(cli, echo, f"name: w\ntasks:\n  a:\n    executor: echo\n    config_file: c.yaml{extra}\n")
    assert expected in err, err


def test_a_valid_config_file_passes_and_runs(cli: Cli, echo: Path) -> None:
    write(echo / "c.yaml", "message: hi\n")
    wf = write(echo / "wf.yaml", "name: w\ntasks:\n  a: {executor: echo, config_file: c.yaml}\n")
    assert cli("validate", str(wf), cwd=echo).code == 0
    assert cli("run", str(wf), cwd=echo).code == 0


def test_a_check_that_raises_is_reported(cli: Cli, echo: Path) -> None:
    err = both(cli, echo, "name: w\ntasks:\n  a: {executor: broken, message: hi}\n")
    assert "wf.yaml:3: tasks.a: executor 'broken': check() failed: RuntimeError: oops" in err


class Config(BaseModel):
    pass


def test_check_must_be_static_or_classmethod() -> None:
    with pytest.raises(ExecutorDefinitionError, match="check must be a @staticmethod or @classmethod"):

        @executor
        class Wrong:
            def __init__(self, config: Config) -> None: ...

            def check(self, task: object, where: object) -> list[str]:
                return []

            def run(self, config_file: str, ctx: object, upstream: dict[str, object] = {}) -> None: ...

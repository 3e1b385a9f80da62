"""One rule for every path a workflow names: inside the project, symlinks followed, opt-out in ork.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from orkhelpers import Cli, write
from ork import PathError, resolve_path

FUNC = "def f() -> int:\n    return 1\n"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A project (with ork.yaml) and a folder beside it, outside the project."""
    project = tmp_path / "proj"
    outside = tmp_path / "elsewhere"
    write(project / "ork.yaml", "")
    write(outside / "out.py", FUNC)
    write(outside / "conf.yaml", "x: 1\n")
    write(project / "flows" / "inside.py", FUNC)
    return project, outside


def test_relative_paths_start_at_the_given_folder(layout: tuple[Path, Path]) -> None:
    project, _ = layout
    found = resolve_path("inside.py", field="tasks.a.file", relative_to=project / "flows", project_dir=project, must_exist="file")
    assert found == (project / "flows" / "inside.py").resolve()
    # several folders: the first where the path exists wins
    found = resolve_path(
        "flows/inside.py", field="f", relative_to=[project / "flows", project], project_dir=project, must_exist="file"
    )
    assert found == (project / "flows" / "inside.py").resolve()


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_paths_outside_the_project_are_refused(layout: tuple[Path, Path], how: str) -> None:
    project, outside = layout
    if how == "dotdot":
        raw = "../../elsewhere/out.py"
    elif how == "absolute":
        raw = str(outside / "out.py")
    else:
        (project / "flows" / "link.py").symlink_to(outside / "out.py")
        raw = "link.py"
    with pytest.raises(PathError) as info:
        resolve_path(raw, field="tasks.a.file", relative_to=project / "flows", project_dir=project, must_exist="file")
    message = str(info.value)
    assert message.startswith(f"tasks.a.file: {raw!r} resolves to {(outside / 'out.py').resolve()}, outside the project folder")
    assert "allowed_path_roots" in message
    assert info.value.outside and info.value.field == "tasks.a.file" and info.value.value == raw


def test_a_symlinked_folder_inside_pointing_out_is_outside(layout: tuple[Path, Path]) -> None:
    project, outside = layout
    (project / "shared").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathError, match="outside the project folder"):
        resolve_path("shared/out.py", field="f", relative_to=project, project_dir=project)


def test_allowed_roots_let_paths_out(layout: tuple[Path, Path]) -> None:
    project, outside = layout
    found = resolve_path("../elsewhere/out.py", field="f", relative_to=project, project_dir=project, allowed_roots=[outside])
    assert found == (outside / "out.py").resolve()


def test_missing_paths_name_every_place_looked_in(layout: tuple[Path, Path]) -> None:
    project, _ = layout
    with pytest.raises(PathError) as info:
        resolve_path("gone.py", field="tasks.a.file", relative_to=[project / "flows", project], project_dir=project, must_exist="file")
    assert not info.value.outside
    assert str(info.value) == (
        f"tasks.a.file: 'gone.py' not found (looked for {project / 'flows' / 'gone.py'}, {project / 'gone.py'})"
    )
    with pytest.raises(PathError, match="'flows' a folder, not a file"):
        resolve_path("flows", field="f", relative_to=project, project_dir=project, must_exist="file")
    with pytest.raises(PathError, match="'ork.yaml' a file, not a folder"):
        resolve_path("ork.yaml", field="f", relative_to=project, project_dir=project, must_exist="dir")


# -- every path field of the core and the python executor, through `ork run` --------------------------


def _run(cli: Cli, project: Path, task: str) -> str:
    """`ork run` refuses to start (exit 2) and `ork validate` reports the same (exit 1)."""
    wf = write(project / "flows" / "wf.yaml", "name: w\ntasks:\n  a:\n" + task)
    result = cli("run", str(wf), cwd=project)
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.out + result.err
    validated = cli("validate", str(wf), cwd=project)
    assert validated.code == 1 and validated.err == result.err, validated.err
    return result.out + result.err


@pytest.mark.parametrize(
    ("task", "field", "target"),
    [
        ("    file: ../../elsewhere/out.py\n    function: f\n", "tasks.a.file", "out.py"),
        ("    file: ../../elsewhere/out.py\n    function: f\n    isolation: process\n", "tasks.a.file", "out.py"),
        ("    file: {outside}/out.py\n    function: f\n", "tasks.a.file", "out.py"),
        ("    file: link.py\n    function: f\n", "tasks.a.file", "out.py"),
        ("    file: inside.py\n    function: f\n    config_file: ../../elsewhere/conf.yaml\n", "tasks.a.config_file", "conf.yaml"),
        ("    file: inside.py\n    function: f\n    config_file: {outside}/conf.yaml\n", "tasks.a.config_file", "conf.yaml"),
    ],
)
def test_ork_run_refuses_workflow_paths_outside_the_project(
    cli: Cli, layout: tuple[Path, Path], task: str, field: str, target: str
) -> None:
    project, outside = layout
    (project / "flows" / "link.py").symlink_to(outside / "out.py")
    text = _run(cli, project, task.format(outside=outside))
    assert field in text, text
    assert f"resolves to {outside / target}, outside the project folder {project}" in text, text
    assert "allowed_path_roots" in text


def test_allowed_path_roots_in_ork_yaml_is_the_opt_out(cli: Cli, layout: tuple[Path, Path]) -> None:
    project, outside = layout
    write(project / "ork.yaml", "allowed_path_roots: [../elsewhere]\n")
    wf = write(
        project / "flows" / "wf.yaml",
        "name: w\ntasks:\n"
        "  a: {file: ../../elsewhere/out.py, function: f, config_file: ../../elsewhere/conf.yaml}\n"
        "  b: {file: ../../elsewhere/out.py, function: f, isolation: process}\n",
    )
    result = cli("run", str(wf), cwd=project)
    assert result.code == 0, result.out + result.err


def test_the_run_time_guard_holds_too(layout: tuple[Path, Path], fresh_modules: None) -> None:
    """A file swapped for a symlink after `ork validate` is still refused when the task runs."""
    import dataclasses

    from ork_core.context import Context, MemorySink, Metrics, TaskLogger
    from ork_core.python_executor import PythonTask, prepare

    project, outside = layout
    sink = MemorySink()
    ctx = Context(
        task_name="a", workflow_name="w", run_id="r", attempt=1, log=TaskLogger(sink, "r", "a", 1),
        metrics=Metrics(sink, "r", "a", 1), workflow_dir=project / "flows", project_dir=project,
    )
    task = PythonTask(file="../../elsewhere/out.py", function="f")
    with pytest.raises(PathError, match="tasks.a.file: '../../elsewhere/out.py' resolves to .*outside the project folder"):
        prepare(task, ctx)
    assert prepare(task, dataclasses.replace(ctx, allowed_path_roots=(outside,))).func() == 1


def test_a_nul_in_a_path_and_a_fifo_as_config_file_get_a_placed_message(cli: Cli, layout: tuple[Path, Path]) -> None:
    """Neither may reach the OS as a path (a ValueError) or be opened (a FIFO blocks the reader)."""
    import os

    project, _ = layout
    text = _run(cli, project, '    file: "inside\\0.py"\n    function: f\n')
    assert "tasks.a.file: 'inside\\x00.py' contains a NUL character" in text, text
    os.mkfifo(project / "flows" / "conf.fifo")
    text = _run(cli, project, "    file: inside.py\n    function: f\n    config_file: conf.fifo\n")
    assert "tasks.a.config_file: config file 'conf.fifo' not a regular file" in text, text

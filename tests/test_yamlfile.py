"""ork's YAML is JSON-shaped and bounded: no file hangs ork, prints a traceback or means two things."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orkhelpers import Cli, write
from ork_core.yamlfile import MAX_FILE_BYTES, load_yaml

TASKS = "def f(x: object = 0) -> object:\n    return x\n"
WF_TAIL = "tasks:\n  a: {file: tasks.py, function: f}\n"

LAUGHS = "".join(
    f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi")
)
BOMB = "  a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS


def ork(args: list[str], cwd: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`ork` as a child with a deadline: these inputs used to hang, which must fail the test, not stall it."""
    env = {**os.environ, "ORK_DISABLE_PLUGINS": "1"}
    env.pop("ORK_DB", None)
    return subprocess.run([sys.executable, "-m", "ork_core", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def refused(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_alias_bomb_in_params_is_refused_at_once(project: Path) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", "name: w\nparams:\n" + BOMB + WF_TAIL)
    refused(ork(["run", "wf.yaml"], project), "wf.yaml:8: params.f[0]: aliases repeat more than 100,000 values")


def test_an_alias_bomb_in_inputs_is_refused_at_once(project: Path) -> None:
    write(project / "tasks.py", TASKS)
    inputs = "".join("      " + line[2:] for line in BOMB.splitlines(keepends=True))
    write(project / "wf.yaml", "name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    inputs:\n" + inputs)
    refused(ork(["run", "wf.yaml"], project), "wf.yaml:12: tasks.a.inputs.f[0]: aliases repeat more than 100,000 values")


def test_an_alias_bomb_in_ork_yaml_is_refused_at_once(project: Path) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", "name: w\n" + WF_TAIL)
    write(project / "ork.yaml", "executors:\n  p:\n    type: python\n    config:\n" + "".join("    " + l for l in BOMB.splitlines(keepends=True)))
    refused(ork(["run", "wf.yaml"], project), "ork.yaml:10: executors.p.config.f[0]: aliases repeat more than 100,000 values")


def test_aliases_within_the_bound_still_share_their_values(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path / "a.yaml", "d: &d {retries: 2, env: {A: b}}\nt1: {<<: *d, x: 1}\nt2: *d\n"))
    assert doc.problems == []
    assert doc.data["t1"] == {"x": 1, "retries": 2, "env": {"A": "b"}} and doc.data["t2"] == doc.data["d"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: w\nparams:\n  a: &a [*a]\n", "wf.yaml:3: params.a[0]: alias *a is inside the collection it refers to (a recursive alias)"),
        ("name: w\nparams: &p\n  a: *p\n", "wf.yaml:3: params.a: alias *p is inside the collection it refers to"),
        ("name: w\nparams: {x: *nope}\n", "wf.yaml:2: params.x: alias *nope refers to no anchor &nope defined before it"),
        ('name: w\nparams: {1: a, "1": b}\n', "wf.yaml:2: params: mapping key 1 is an integer; keys must be strings (quote it: '1')"),
        ("name: w\nparams:\n  yes: 1\n", "wf.yaml:3: params: mapping key yes is a boolean; keys must be strings"),
        ("name: w\nparams:\n  ~: 1\n", "wf.yaml:3: params: mapping key ~ is null; keys must be strings"),
        ("name: w\nparams:\n  [1, 2]: a\n", "wf.yaml:3: params: a mapping key must be a string, not a list"),
        ("name: w\nparams:\n  ? {a: 1}\n  : b\n", "wf.yaml:3: params: a mapping key must be a string, not a mapping"),
        ("name: w\ntasks:\n  1: {file: tasks.py, function: f}\n", "wf.yaml:3: tasks: mapping key 1 is an integer"),
        ("name: w\nparams: {d: !!binary aGVsbG8=}\n", "wf.yaml:2: params.d: unsupported tag !!binary"),
        ("name: w\nparams: !!set {a, b}\n", "wf.yaml:2: params: unsupported tag !!set on a mapping"),
        ("name: w\nparams: !!omap [a: 1]\n", "wf.yaml:2: params: unsupported tag !!omap on a list"),
        ("name: w\nparams: {d: !!timestamp 2024-01-01}\n", "wf.yaml:2: params.d: unsupported tag !!timestamp"),
        ("name: w\nparams: {d: !!python/object/apply:os.system [id]}\n", "wf.yaml:2: params.d: unsupported tag !!python/object/apply:os.system"),
        ("name: w\nparams: {d: !secret x}\n", "wf.yaml:2: params.d: unsupported tag !secret"),
        ("name: w\nparams: {d: !!int x}\n", "wf.yaml:2: params.d: x is not an integer"),
        ("name: w\nparams: {d: .inf}\n", "wf.yaml:2: params.d: .inf is not a finite number (JSON has no infinity or NaN)"),
        ("name: w\nparams: {d: .nan}\n", "params.d: .nan is not a finite number"),
        ("name: w\nparams: {d: 1e400}\n", "params.d: 1e400 is not a finite number"),
        ("name: w\nparams: {d: " + "9" * 5000 + "}\n", "params.d: 9999999999999999999999999999999999999... is not an integer (at most 4300 digits)"),
        ("name: w\nparams:\n  d: " + "[" * 300 + "]" * 300 + "\n", "wf.yaml:3: params.d: nested more than 200 levels deep"),
        ("name: w\nparams:\n  <<: 5\n", "wf.yaml:3: params: '<<' merges a mapping or a list of mappings, not an integer"),
    ],
)
def test_yaml_that_is_not_json_shaped_is_refused_with_its_line(cli: Cli, project: Path, text: str, expected: str) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", text + (WF_TAIL if "tasks:" not in text else ""))
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 2, result.out
    assert expected in result.err
    assert "Traceback" not in result.err


def test_a_date_is_the_string_it_was_written_as_in_validate_and_run(cli: Cli, project: Path) -> None:
    write(project / "tasks.py", "def f(d: str) -> str:\n    return d\n")
    write(project / "wf.yaml", "name: w\nparams: {d: 2024-01-01, t: 2024-01-01 10:00:00}\ntasks:\n"
          "  a: {file: tasks.py, function: f, inputs: {d: {param: d}}}\n  b: {file: tasks.py, function: f, inputs: {d: {param: t}}}\n")
    assert cli("validate", "wf.yaml", cwd=project).code == 0
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 0, result.err
    out = cli("runs", "--json", cwd=project).out
    assert '"d": "2024-01-01"' in out and '"t": "2024-01-01 10:00:00"' in out


def test_json_numbers_with_an_exponent_are_numbers(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path / "a.yaml", "a: 1e3\nb: 2.5E-1\nc: '1e3'\nd: 2024-01-01\ne: =\nf: !!str 5\n"))
    assert doc.data == {"a": 1000.0, "b": 0.25, "c": "1e3", "d": "2024-01-01", "e": "=", "f": "5"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("which", ["wf.yaml", "ork.yaml"])
def test_a_fifo_is_refused_without_blocking(project: Path, which: str) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", "name: w\n" + WF_TAIL)
    (project / which).unlink(missing_ok=True)
    os.mkfifo(project / which)
    refused(ork(["run", "wf.yaml"], project, timeout=10), f"{which}: is a FIFO, not a regular file; expected a YAML file")


def test_a_directory_or_a_device_is_refused(project: Path) -> None:
    (project / "wf.yaml").mkdir()
    refused(ork(["run", "wf.yaml"], project), "wf.yaml: is a directory, not a regular file")
    if Path("/dev/zero").exists():
        refused(ork(["run", "/dev/zero"], project, timeout=10), "/dev/zero: is a character device, not a regular file")


def test_a_directory_named_ork_yaml_is_reported(cli: Cli, project: Path) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", "name: w\n" + WF_TAIL)
    (project / "ork.yaml").mkdir()
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 2 and "ork.yaml: is a directory, not a regular file" in result.err


def test_a_file_over_the_size_limit_is_refused(cli: Cli, project: Path) -> None:
    wf = project / "wf.yaml"
    with wf.open("w") as out:
        out.write("name: w\n" + WF_TAIL + "# padding\n")
        out.truncate(MAX_FILE_BYTES + 1)
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 2 and "wf.yaml: is larger than 10 MiB" in result.err


def test_bad_utf8_names_its_line(cli: Cli, project: Path) -> None:
    (project / "wf.yaml").write_bytes(b"name: w\ntasks:\n  a: {file: t\xffsks.py}\n")
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 2 and "wf.yaml:3: not UTF-8 text: byte 0xff" in result.err


def test_an_ork_yaml_of_only_comments_means_the_defaults_like_an_empty_one(cli: Cli, project: Path) -> None:
    write(project / "tasks.py", TASKS)
    write(project / "wf.yaml", "name: w\n" + WF_TAIL)
    write(project / "ork.yaml", "# executors:\n#   bq: {type: bigquery}\n")
    result = cli("run", "wf.yaml", cwd=project)
    assert result.code == 0, result.err

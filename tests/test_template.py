"""The executor template: bad names are refused, and what it generates installs and passes.

The end-to-end test bakes the template with several names and both kinds, installs the
results together with this checkout's ork-core into one fresh virtual environment, runs
each generated package's own tests there, and asks that environment's ``ork executors``
which executors it found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from ork_core.cli import main
from ork_core.scaffold import ExecutorAnswers, ScaffoldError, executor_name_problem, render_executor

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "cookiecutter-executor"
BAD_NAMES = ["ork-executor-", "1abc", "acme corp", "ork_executor_acme", "Acme", "python", "a--b", ""]
GOOD_NAMES = ["acme", "dbt-cloud", "etl_v2", "s3"]


def clean_env() -> dict[str, str]:
    """The environment for child processes: no ORK_* switches, no PYTHONPATH from this run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORK_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ork-executor-", r"give the short name, such as 'acme': the package is called ork-executor-<name> for you"),
        ("1abc", r"it must start with a letter"),
        ("acme corp", r"it contains a space; use 'acme-corp'"),
        ("ork-executor-acme", r"give the short name, such as 'acme'"),
    ],
)
def test_ork_new_refuses_bad_names_with_the_reason(tmp_path: Path, name: str, message: str) -> None:
    result = CliRunner().invoke(main, ["new", "executor", name, "--no-input", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert f"error: executor name {name!r} is not valid: " in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused name"


def test_the_template_hook_refuses_what_ork_new_refuses(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from cookiecutter.exceptions import FailedHookException
    from cookiecutter.main import cookiecutter

    config = tmp_path / "cookiecutter.json"  # replay files go here, not to the home folder
    config.write_text(json.dumps({"replay_dir": str(tmp_path / "replay"), "cookiecutters_dir": str(tmp_path / "cache")}))
    out = tmp_path / "out"
    for name in BAD_NAMES:
        with pytest.raises(FailedHookException):
            cookiecutter(str(TEMPLATE), no_input=True, extra_context={"executor_name": name},
                         output_dir=str(out), config_file=str(config))
        problem = executor_name_problem(name)
        assert problem is not None
        assert f"error: executor_name {name!r} is not valid: {problem}" in capfd.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []
    for name in GOOD_NAMES:
        assert executor_name_problem(name) is None


def test_ork_new_renders_derived_names(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "new", "executor", "dbt-cloud", "-o", str(tmp_path), "--kind", "deferred", "--no-input",
        "--description", "Run dbt Cloud jobs.", "--author", "Ada", "--email", "ada@example.com",
    ])
    assert result.exit_code == 0, result.output
    root = tmp_path / "ork-executor-dbt-cloud"
    assert f"created {root}" in result.stdout
    pyproject = (root / "pyproject.toml").read_text()
    assert 'name = "ork-executor-dbt-cloud"' in pyproject
    assert 'dbt-cloud = "ork_executor_dbt_cloud.plugin"' in pyproject
    assert 'authors = [{ name = "Ada", email = "ada@example.com" }]' in pyproject
    plugin = (root / "ork_executor_dbt_cloud" / "plugin.py").read_text()
    assert 'register("dbt-cloud", "ork_executor_dbt_cloud.executor:DbtCloudExecutor")' in plugin
    assert 'register("dbt-cloud", "ork_executor_dbt_cloud.tracker:DbtCloudJobTracker")' in plugin
    assert "Run dbt Cloud jobs." in (root / "README.md").read_text()
    assert "Ada" in (root / "LICENSE").read_text()
    assert (root / ".github" / "workflows" / "ci.yml").is_file()
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_a_sync_executor_has_no_tracker_and_an_existing_folder_is_kept(tmp_path: Path) -> None:
    root = render_executor(ExecutorAnswers.defaults("acme"), tmp_path)
    package = root / "ork_executor_acme"
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "executor.py", "plugin.py", "py.typed"]
    assert not (root / "tests" / "job_server.py").exists()
    assert "ork_register_job_trackers" not in (package / "plugin.py").read_text()
    with pytest.raises(ScaffoldError, match="already exists"):
        render_executor(ExecutorAnswers.defaults("acme"), tmp_path)


# --- end to end: a fresh virtual environment --------------------------------------------------


@dataclass(frozen=True)
class Baked:
    name: str
    kind: str
    version: str
    root: Path

    @property
    def distribution(self) -> str:
        return "ork-executor-" + self.name.replace("_", "-")

    @property
    def test_class(self) -> str:
        return "Test" + "".join(part.title() for part in re.split(r"[-_]", self.name)) + "Conformance"


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Baked]]]:
    """Three baked packages installed, with this checkout's ork-core, into one new venv."""
    base = tmp_path_factory.mktemp("template")
    baked = []
    for name, kind, version in (("acme", "sync", "0.1.0"), ("dbt-cloud", "deferred", "0.2.0"), ("etl_v2", "sync", "1.0.0")):
        answers = ExecutorAnswers(name, f"Run {name} jobs.", "Test Author", "test@example.com", kind, version)
        baked.append(Baked(name, kind, version, render_executor(answers, base / "src")))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    env = clean_env()
    # one setuptools for every editable build, instead of an isolated build env per package
    subprocess.run([*pip, "setuptools>=77"], check=True, env=env, timeout=600)
    editable = [arg for b in baked for arg in ("-e", f"{b.root}[test]")]
    subprocess.run([*pip, "--no-build-isolation", "-e", str(REPO), *editable], check=True, env=env, timeout=900)
    yield env_dir, baked


@pytest.mark.timeout(1800)
def test_generated_packages_pass_their_tests_and_ork_lists_them(environment: tuple[Path, list[Baked]], tmp_path: Path) -> None:
    env_dir, baked = environment
    python = env_dir / "bin" / "python"
    # the three suites mostly wait on timers and child processes: run them side by side
    running = [
        (pkg, subprocess.Popen(
            [str(python), "-m", "pytest", "-v", "-p", "no:cacheprovider", "-rs"],
            cwd=pkg.root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
        for pkg in baked
    ]
    outputs = {}
    try:
        for pkg, proc in running:
            outputs[pkg.name] = (proc.communicate(timeout=600)[0], proc.returncode)
    finally:
        for _, proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for pkg in baked:
        out, code = outputs[pkg.name]
        assert code == 0, f"{pkg.distribution}: its tests failed\n{out[-8000:]}"
        must_pass = ["test_contract", "test_config_round_trips", "test_registration_is_lazy", "test_discovered",
                     "test_runs_one_task", "test_timeout", "test_cancel"]
        if pkg.kind == "deferred":
            must_pass += ["test_resume_adopts", "test_adopt_unknown_key"]
        for check in must_pass:
            assert f"{pkg.test_class}::{check} PASSED" in out, f"{pkg.distribution}: {check} did not pass\n{out}"
        assert "test_ork_lists_the_executor PASSED" in out
        assert "test_the_readme_workflow_runs PASSED" in out

    listed = subprocess.run(
        [str(env_dir / "bin" / "ork"), "executors", "--json"], cwd=tmp_path, env=clean_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    for pkg in baked:
        row = rows[pkg.name]
        assert (row["distribution"], row["version"], row["status"]) == (pkg.distribution, pkg.version, "ok"), row
    assert set(rows) == {"python", *(pkg.name for pkg in baked)}, "the fresh environment holds only these plugins"


# --- docs/authoring.md ----------------------------------------------------------------------------


def test_the_unpackaged_example_in_authoring_md_runs(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "authoring.md").read_text()
    files = re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", doc, re.S)
    assert {name for name, _ in files} == {"executors/archive.py", "ork.yaml", "workflow.yaml"}
    for name, text in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "report.csv").write_text("day,total\nmon,3\n")
    env = {**clean_env(), "ORK_DISABLE_PLUGINS": "1"}
    ork = [sys.executable, "-m", "ork_core"]
    run = subprocess.run([*ork, "run", "-q", "workflow.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = run.stdout.split()[1]
    shown = subprocess.run([*ork, "runs", "show", run_id, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    (task,) = json.loads(shown.stdout)["tasks"]
    assert task["status"] == "success"
    assert task["output"] == {"archived": str(tmp_path / "archive" / run_id / "report.csv"), "bytes": 16}
    listed = subprocess.run([*ork, "executors", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert {"name": "archive", "source": "ork.yaml", "status": "ok"}.items() <= {
        row["name"]: row for row in json.loads(listed.stdout)
    }["archive"].items()


def test_ork_new_asks_for_what_is_missing_in_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ork_core.scaffold.stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(
        main, ["new", "executor", "warehouse", "-o", str(tmp_path), "--author", "Grace"],
        input="Load the warehouse.\ngrace@example.com\ndeferred\n",
    )
    assert result.exit_code == 0, result.output
    assert "Description [Run warehouse jobs from ork workflows.]: " in result.stdout
    assert "Author" not in result.stdout.split("Description")[0], "a value given as an option is not asked for"
    root = tmp_path / "ork-executor-warehouse"
    assert (root / "ork_executor_warehouse" / "tracker.py").is_file(), "the answer 'deferred' was used"
    assert 'authors = [{ name = "Grace", email = "grace@example.com" }]' in (root / "pyproject.toml").read_text()


def test_ork_new_without_cookiecutter_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cookiecutter.main", None)
    result = CliRunner().invoke(main, ["new", "executor", "acme", "--no-input", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: ork new needs cookiecutter, an optional dependency: pip install 'ork-core[authoring]'" in result.stderr


def test_a_template_folder_without_cookiecutter_json_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["new", "executor", "acme", "--no-input", "-o", str(tmp_path), "--template", str(tmp_path)])
    assert result.exit_code == 2
    assert f"is not a cookiecutter template (no cookiecutter.json in {tmp_path})" in result.stderr


@pytest.mark.timeout(600)
def test_the_wheel_carries_the_template_and_ork_new_finds_it(tmp_path: Path) -> None:
    """`pip install ork-core` (a wheel, no checkout beside it) must still have `ork new executor`."""
    # built from a copy: pip builds in the source tree, and a stale build/ there would hide a miss
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".ork"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, env=clean_env(), timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("ork_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name.removeprefix("ork_core/executor_template/") for name in archive.namelist()
                   if name.startswith("ork_core/executor_template/")}
        archive.extractall(tmp_path / "site")
    tracked = {str(path.relative_to(TEMPLATE)) for path in TEMPLATE.rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert shipped == tracked
    # -S: no site-packages, so the editable ork-core of this venv cannot answer instead of the wheel's
    found = subprocess.run(
        [sys.executable, "-S", "-c", "from ork_core.scaffold import find_template; print(find_template())"],
        capture_output=True, text=True, cwd=tmp_path, env={**clean_env(), "PYTHONPATH": str(tmp_path / "site")}, timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == (tmp_path / "site" / "ork_core" / "executor_template").resolve()

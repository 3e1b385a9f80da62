"""ork.testing: run_task, plugin_manager, and the conformance kit on good and broken executors.

The good executors pass the kit by being collected here like any plugin's test class; each
broken one has one flaw, and the kit's check for it must fail with a message naming it.
docs/testing.md quotes the snippets between ``# doc:`` markers verbatim (a test checks).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import kit_executors as kx
from orkhelpers import make_dist, write
from ork import WorkflowError
from ork.testing import ExecutorConformance, TaskResult, inline_plugin, plugin_manager, run_task

JOBS = '''
def greet(name: str, punctuation: str = "!") -> dict:
    return {"greeting": f"hello {name}{punctuation}"}

def wait_for_cancel(ctx) -> None:
    ctx.cancel_event.wait(60)
'''


# --- run_task ---------------------------------------------------------------------------------


def test_run_task_returns_output_logs_and_metrics() -> None:
    # doc: run_task
    result = run_task(kx.Greeter, config={"greeting": "hi"}, task={"name": "ada"})

    assert result.status == "success", result.describe()
    assert result.output == {"message": "hi ada"}
    assert "greeting ada" in result.logs
    assert result.metrics == [("greetings", 1.0, {})]
    # end doc


def test_upstream_outputs_and_params_are_bound(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(JOBS)
    # doc: upstream
    result = run_task(
        "python",
        task={
            "file": "jobs.py",
            "function": "greet",
            "inputs": {"name": {"ref": "tasks.lookup.output.name"}, "punctuation": {"param": "mark"}},
        },
        upstream={"lookup": {"name": "grace"}},
        params={"mark": "?"},
        project_dir=tmp_path,
    )
    assert result.output == {"greeting": "hello grace?"}
    # end doc
    assert (tmp_path / ".ork" / "ork.db").is_file(), "a given project_dir keeps the state database"


def test_timeout_and_cancel_end_the_task() -> None:
    # doc: timeout
    timed_out = run_task(kx.Greeter, task={"name": "slow", "seconds": 30}, timeout=0.5)
    assert timed_out.status == "failed"
    assert timed_out.error == "timed out after 0.5s"

    cancelled = run_task(kx.Greeter, task={"name": "slow", "seconds": 30}, cancel_after=0.2)
    assert (cancelled.status, cancelled.run_status) == ("cancelled", "cancelled")
    # end doc
    assert timed_out.elapsed < 5 and cancelled.elapsed < 5


def test_a_deferred_class_runs_with_its_tracker(tmp_path: Path) -> None:
    # doc: deferred
    result = run_task(
        kx.FileJobs,
        config={"jobs_dir": str(tmp_path / "jobs")},
        task={"seconds": 0.1, "result": "42 rows"},
        trackers={"filejobs": kx.FileJobTracker},
    )
    assert result.output == {"result": "42 rows"}
    assert result.deferred and result.external_id
    # end doc
    assert result.history[-2:] == ("deferred", "success")


def test_a_failed_task_carries_its_error() -> None:
    result = run_task(kx.WrongOutput, task={"name": "x"})
    assert result.status == "failed"
    assert result.error is not None and "output does not match Greeting" in result.error
    assert not result.ok and "error: output does not match" in result.describe()


def test_bad_task_keys_fail_like_ork_validate() -> None:
    with pytest.raises(WorkflowError, match=r"tasks\.task\.nmae: unknown key .nmae. \(did you mean .name.\?\)"):
        run_task(kx.Greeter, task={"nmae": "ada"})


def test_async_executors_run_too() -> None:
    assert run_task(kx.AsyncGreeter, task={"name": "bo"}).output == {"message": "hello bo"}


# --- plugin_manager ---------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_modules: None) -> Path:
    """A folder on sys.path for fake installed distributions (child processes see it too)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def fake_plugin(site: Path, name: str, plugin_py: str, *, version: str = "1.0.0") -> None:
    """Install ork-executor-<name> with a registration module and a Greeter-like executor."""
    package = f"ork_executor_{name}"
    executor_py = f"from kit_executors import Greeter as {name.title()}Executor\n"
    make_dist(
        site, f"ork-executor-{name}", version, {name: f"{package}.plugin"},
        {f"{package}/__init__.py": "", f"{package}/plugin.py": plugin_py, f"{package}/executor.py": executor_py},
    )


LAZY_REGISTRATION = """
from ork import hookimpl
ORK_PLUGIN_API = ">=1,<2"

@hookimpl
def ork_register_executors(register):
    register("{name}", "ork_executor_{name}.executor:{title}Executor")
"""


def test_plugin_manager_registers_inline_plugins() -> None:
    # doc: plugin_manager
    plugins = plugin_manager(inline_plugin({"greeter": "kit_executors:Greeter"}))

    assert plugins.registry.names("executor") == ["greeter", "python"]
    assert plugins.registry.get("executor", "greeter").load() is kx.Greeter
    # end doc
    assert plugins.registry.quarantined == []


def test_plugin_manager_loads_installed_plugins_only_when_asked(site: Path) -> None:
    fake_plugin(site, "fakegreeter", LAZY_REGISTRATION.format(name="fakegreeter", title="Fakegreeter"))
    assert "fakegreeter" not in plugin_manager().registry.names("executor")
    reg = plugin_manager(entry_points=True).registry.get("executor", "fakegreeter")
    assert (reg.source.distribution, reg.source.version) == ("ork-executor-fakegreeter", "1.0.0")


# --- the kit on good executors: collected and run like any plugin's conformance class ---------


# doc: python-conformance
class TestPythonExecutorConformance(ExecutorConformance):
    executor = "python"

    def task(self) -> Mapping[str, Any]:
        (self.project_dir / "jobs.py").write_text(JOBS)
        return {"file": "jobs.py", "function": "greet", "inputs": {"name": {"const": "ork"}}}

    def slow_task(self) -> Mapping[str, Any]:
        (self.project_dir / "jobs.py").write_text(JOBS)
        return {"file": "jobs.py", "function": "wait_for_cancel"}

    def check_output(self, output: Any) -> None:
        assert output == {"greeting": "hello ork!"}
# end doc


class TestGreeterConformance(ExecutorConformance):
    executor = kx.Greeter

    def config(self) -> Mapping[str, Any]:
        return {"greeting": "hey"}

    def task(self) -> Mapping[str, Any]:
        return {"name": "ada"}

    def slow_task(self) -> Mapping[str, Any]:
        return {"name": "ada", "seconds": 60}


class TestAsyncGreeterConformance(TestGreeterConformance):
    executor = kx.AsyncGreeter


# doc: deferred-conformance
class TestFileJobsConformance(ExecutorConformance):
    executor = kx.FileJobs
    trackers = {"filejobs": kx.FileJobTracker}

    def config(self) -> Mapping[str, Any]:
        return {"jobs_dir": str(self.project_dir / "jobs")}

    def task(self) -> Mapping[str, Any]:
        return {"seconds": 0.1, "result": "ok"}

    def slow_task(self) -> Mapping[str, Any]:
        return {"seconds": 60}

    def submissions(self) -> int:
        return kx.FileJobStore(self.config()["jobs_dir"]).count()

    def check_stopped(self, result: TaskResult) -> None:
        store = kx.FileJobStore(self.config()["jobs_dir"])
        assert store.get(result.external_id or "")["cancelled"], "the job was not cancelled"
# end doc


class TestInstalledPluginConformance(TestGreeterConformance):
    executor = "fakegreeter"
    distribution = "ork-executor-fakegreeter"

    @pytest.fixture(autouse=True)
    def _installed(self, site: Path) -> None:
        fake_plugin(site, "fakegreeter", LAZY_REGISTRATION.format(name="fakegreeter", title="Fakegreeter"))


# --- the kit on broken executors: each check must fail and name the flaw ----------------------


class GreeterKit(ExecutorConformance):
    """Not collected (no Test prefix): the broken cases below subclass it and call one check."""

    executor = kx.Greeter
    stop_within = 1.0

    def task(self) -> Mapping[str, Any]:
        return {"name": "ada"}

    def slow_task(self) -> Mapping[str, Any]:
        return {"name": "ada", "seconds": 5}  # Stubborn sleeps through it: well past stop_within


class FileJobsKit(ExecutorConformance):
    trackers = {"filejobs": kx.FileJobTracker}

    def config(self) -> Mapping[str, Any]:
        return {"jobs_dir": str(self.project_dir / "jobs")}

    def task(self) -> Mapping[str, Any]:
        return {"seconds": 0.1}

    def submissions(self) -> int:
        return kx.FileJobStore(self.config()["jobs_dir"]).count()


def kit(base: type[ExecutorConformance], executor: type) -> ExecutorConformance:
    return type(f"Broken{executor.__name__}", (base,), {"executor": executor})()


BROKEN = [
    pytest.param(GreeterKit, kx.Stubborn, "test_timeout", r"run\(\) was still running", id="ignores-timeout"),
    pytest.param(GreeterKit, kx.Stubborn, "test_cancel", r"run\(\) was still running", id="ignores-cancel"),
    pytest.param(GreeterKit, kx.Drifting, "test_config_round_trips", r"DriftingConfig does not round-trip", id="drifting-config"),
    pytest.param(GreeterKit, kx.Loose, "test_config_round_trips", r"LooseConfig accepts an unknown key", id="loose-config"),
    pytest.param(GreeterKit, kx.WrongOutput, "test_runs_one_task", r"output does not match Greeting", id="wrong-output"),
    pytest.param(GreeterKit, kx.Undocumented, "test_contract", r"has no docstring", id="undocumented"),
    pytest.param(GreeterKit, kx.Undecorated, "test_contract", r"not decorated with @executor", id="undecorated"),
    pytest.param(FileJobsKit, kx.ForgetfulFileJobs, "test_resume_adopts", r"called run\(\) again", id="no-adopt"),
    pytest.param(FileJobsKit, kx.Clingy, "test_adopt_unknown_key", r"adopt\(\) returned .* nothing was submitted", id="adopts-anything"),
]


@pytest.mark.parametrize(("base", "executor", "check", "message"), BROKEN)
def test_the_kit_catches(base: type[ExecutorConformance], executor: type, check: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        getattr(kit(base, executor), check)()


REGISTRATIONS = {
    "eager": (
        """
        from ork import hookimpl
        from ork_executor_eager.executor import EagerExecutor
        ORK_PLUGIN_API = ">=1,<2"

        @hookimpl
        def ork_register_executors(register):
            register("eager", EagerExecutor)
        """,
        r"registers classes instead of lazy 'module:Class' strings",
    ),
    "importer": (
        """
        from ork import hookimpl
        import ork_executor_importer.executor
        ORK_PLUGIN_API = ">=1,<2"

        @hookimpl
        def ork_register_executors(register):
            register("importer", "ork_executor_importer.executor:ImporterExecutor")
        """,
        r"also imports ork_executor_importer\.executor",
    ),
    "heavy": (
        """
        from ork import hookimpl
        import heavylib
        ORK_PLUGIN_API = ">=1,<2"

        @hookimpl
        def ork_register_executors(register):
            register("heavy", "ork_executor_heavy.executor:HeavyExecutor")
        """,
        r"imports heavylib \(heavylib\), which ork-core does not depend on",
    ),
    "unversioned": (
        """
        from ork import hookimpl

        @hookimpl
        def ork_register_executors(register):
            register("unversioned", "ork_executor_unversioned.executor:UnversionedExecutor")
        """,
        r"does not declare ORK_PLUGIN_API",
    ),
}


@pytest.mark.parametrize("name", sorted(REGISTRATIONS))
def test_the_kit_catches_costly_registration(site: Path, name: str) -> None:
    plugin_py, message = REGISTRATIONS[name]
    fake_plugin(site, name, re.sub(r"(?m)^        ", "", plugin_py))
    heavy = site / "heavylib-2.0.dist-info"
    heavy.mkdir()
    (heavy / "METADATA").write_text("Metadata-Version: 2.1\nName: heavylib\nVersion: 2.0\n")
    (heavy / "top_level.txt").write_text("heavylib\n")
    write(site / "heavylib" / "__init__.py", "IMPORTED = True\n")
    broken = type("Broken", (GreeterKit,), {"executor": name})()
    with pytest.raises(AssertionError, match=message):
        broken.test_registration_is_lazy()


def test_a_lazy_registration_passes(site: Path) -> None:
    fake_plugin(site, "fakegreeter", LAZY_REGISTRATION.format(name="fakegreeter", title="Fakegreeter"))
    type("Good", (GreeterKit,), {"executor": "fakegreeter"})().test_registration_is_lazy()


# --- the docs quote these tests ---------------------------------------------------------------


def doc_snippets(text: str) -> Iterator[tuple[str, str]]:
    for match in re.finditer(r"<!-- snippet: (\S+) -->\n```python\n(.*?)```", text, re.S):
        yield match.group(1), match.group(2)


def test_docs_testing_md_quotes_real_tests(tmp_path: Path) -> None:
    from ork_core.scaffold import ExecutorAnswers, render_executor

    docs = (Path(__file__).resolve().parents[1] / "docs" / "testing.md").read_text()
    source = Path(__file__).read_text()
    found = dict(doc_snippets(docs))
    assert len(found) >= 7, "docs/testing.md lost its snippets"
    generated = render_executor(ExecutorAnswers("acme", "d", "a", "a@example.com", "deferred"), tmp_path)
    template_tests = (generated / "tests" / "test_conformance.py").read_text()
    for name, code in found.items():
        if name.startswith("template:"):
            assert code in template_tests, f"docs/testing.md snippet {name!r} is not in the generated test_conformance.py"
            continue
        match = re.search(rf"# doc: {re.escape(name)}\n(.*?)# end doc", source, re.S)
        assert match, f"docs/testing.md quotes snippet {name!r}, which no '# doc:' marker in this file holds"
        assert code == textwrap.dedent(match.group(1)), f"docs/testing.md snippet {name!r} differs from the test it quotes"

"""Discovery through real distribution metadata: entry points, quarantine, duplicates, versions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from orkhelpers import Cli, make_dist, write
from ork import hookimpl
from ork_core.errors import DuplicateExecutorError, PluginLoadError, UnknownExecutorError
from ork_core.plugins import build_plugin_manager

GOOD_EXECUTOR = """
from pydantic import BaseModel
from ork import executor, Context

class AcmeConfig(BaseModel):
    url: str = "http://127.0.0.1"

class AcmeOutput(BaseModel):
    ok: bool

@executor
class AcmeExecutor:
    '''Talks to Acme.'''
    def __init__(self, config: AcmeConfig):
        self.config = config
    def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> AcmeOutput:
        return AcmeOutput(ok=True)
"""


def registration(module: str, name: str = "acme", extra: str = "") -> str:
    return f"""
from ork import hookimpl
{extra}
@hookimpl
def ork_register_executors(register):
    register({name!r}, "{module}.executor:AcmeExecutor")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_modules: None) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def acme(site: Path, dist: str = "ork-executor-acme", module: str = "ork_executor_acme", name: str = "acme", extra: str = "") -> None:
    make_dist(
        site, dist, "1.2.3", {name if name != "acme" else "acme": f"{module}.plugin"},
        {f"{module}/__init__.py": "", f"{module}/plugin.py": registration(module, name, extra), f"{module}/executor.py": GOOD_EXECUTOR},
    )


def test_entry_point_plugin_is_discovered_with_its_distribution(site: Path) -> None:
    acme(site)
    plugins = build_plugin_manager({})
    reg = plugins.registry.get("executor", "acme")
    assert (reg.source.distribution, reg.source.version) == ("ork-executor-acme", "1.2.3")
    assert reg.source.label == "ork-executor-acme==1.2.3"
    assert plugins.registry.get("executor", "python").source.label == "built-in"


def test_listing_does_not_import_the_executor_module(site: Path, cli: Cli, tmp_path: Path) -> None:
    acme(site)
    result = cli("executors", "--json", cwd=tmp_path, env={"ORK_DISABLE_PLUGINS": ""})
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in json.loads(result.out)}
    assert rows["acme"]["distribution"] == "ork-executor-acme"
    assert rows["acme"]["version"] == "1.2.3"
    assert rows["acme"]["status"] == "ok"
    assert "ork_executor_acme.plugin" in sys.modules
    assert "ork_executor_acme.executor" not in sys.modules
    # first use imports it
    plugins = build_plugin_manager({})
    plugins.registry.get("executor", "acme").load()
    assert "ork_executor_acme.executor" in sys.modules


def test_broken_plugin_is_quarantined_and_reported(site: Path, cli: Cli, tmp_path: Path) -> None:
    acme(site)
    make_dist(site, "ork-executor-broken", "0.1", {"broken": "ork_executor_broken.plugin"},
              {"ork_executor_broken/__init__.py": "", "ork_executor_broken/plugin.py": "import not_installed_dependency_xyz\n"})
    plugins = build_plugin_manager({})
    assert "acme" in plugins.registry.names("executor")  # ork goes on
    (q,) = plugins.registry.quarantined
    assert (q.plugin, q.distribution, q.version) == ("broken", "ork-executor-broken", "0.1")
    assert "not_installed_dependency_xyz" in q.error
    result = cli("executors", "--json", cwd=tmp_path, env={"ORK_DISABLE_PLUGINS": ""})
    rows = {r["name"]: r for r in json.loads(result.out)}
    assert rows["broken"]["status"] == "error"
    assert rows["broken"]["distribution"] == "ork-executor-broken"
    assert "not_installed_dependency_xyz" in rows["broken"]["error"]
    # using it fails with that message
    with pytest.raises(UnknownExecutorError, match="ork-executor-broken==0.1 failed to load"):
        plugins.registry.get("executor", "broken")


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path) -> None:
    make_dist(site, "ork-executor-broken", "0.1", {"broken": "ork_executor_broken.plugin"},
              {"ork_executor_broken/__init__.py": "", "ork_executor_broken/plugin.py": "raise RuntimeError('boom')\n"})
    with pytest.raises(PluginLoadError, match="ork-executor-broken==0.1 failed to load.*boom") as info:
        build_plugin_manager({"ORK_STRICT_PLUGINS": "1"})
    assert info.value.distribution == "ork-executor-broken"


def test_register_hook_that_raises_is_quarantined(site: Path) -> None:
    make_dist(site, "ork-executor-bad", "2.0", {"bad": "bad_plugin"},
              {"bad_plugin.py": "from ork import hookimpl\n@hookimpl\ndef ork_register_executors(register):\n    register('x', 42)\n"})
    plugins = build_plugin_manager({})
    (q,) = plugins.registry.quarantined
    assert q.distribution == "ork-executor-bad"
    assert "must be a class or 'module:Class'" in q.error
    assert "x" not in plugins.registry.names("executor")


def test_duplicate_executor_name_names_both_distributions(site: Path) -> None:
    acme(site)
    acme(site, dist="ork-executor-acme-fork", module="acme_fork", name="acme")
    plugins = build_plugin_manager({})
    with pytest.raises(DuplicateExecutorError) as info:
        plugins.registry.get("executor", "acme")
    message = str(info.value)
    assert "ork-executor-acme==1.2.3" in message and "ork-executor-acme-fork==1.2.3" in message
    chosen = plugins.registry.get("executor", "acme", distribution="ork-executor-acme-fork")
    assert chosen.source.distribution == "ork-executor-acme-fork"


def test_duplicate_is_resolved_by_distribution_in_ork_yaml(site: Path, cli: Cli, project: Path) -> None:
    acme(site)
    acme(site, dist="ork-executor-acme-fork", module="acme_fork", name="acme")
    write(project / "ork.yaml", """
        executors:
          acme:
            type: acme
            distribution: ork-executor-acme-fork
        """)
    result = cli("validate", cwd=project, env={"ORK_DISABLE_PLUGINS": ""})
    assert result.code == 0, result.err
    write(project / "ork.yaml", "executors:\n  acme:\n    type: acme\n")
    result = cli("validate", cwd=project, env={"ORK_DISABLE_PLUGINS": ""})
    assert result.code == 1
    assert "ork.yaml:3: executors.acme.type" in result.err
    assert "ork-executor-acme-fork==1.2.3" in result.err


def test_api_version_mismatch_is_quarantined_with_the_range(site: Path) -> None:
    acme(site, extra='ORK_PLUGIN_API = ">=2,<3"')
    plugins = build_plugin_manager({})
    (q,) = plugins.registry.quarantined
    assert ">=2,<3" in q.error and "1.0" in q.error
    assert "acme" not in plugins.registry.names("executor")


def test_api_version_in_range_loads(site: Path) -> None:
    acme(site, extra='ORK_PLUGIN_API = ">=1,<2"')
    assert "acme" in build_plugin_manager({}).registry.names("executor")


def test_misspelled_hook_is_caught_by_check_pending(site: Path) -> None:
    make_dist(site, "ork-typo", "1.0", {"typo": "typo_plugin"},
              {"typo_plugin.py": "from ork import hookimpl\n@hookimpl\ndef ork_register_executor(register):\n    pass\n"})
    plugins = build_plugin_manager({})
    (q,) = plugins.registry.quarantined
    assert "ork_register_executor" in q.error


def test_env_switches_limit_and_disable_plugins(site: Path) -> None:
    acme(site)
    acme(site, dist="ork-executor-other", module="other_mod", name="other")
    assert set(build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}).registry.names("executor")) == {"python"}
    only = build_plugin_manager({"ORK_PLUGINS": "ork-executor-other"}).registry.names("executor")
    assert set(only) == {"python", "other"}
    skip = build_plugin_manager({"ORK_DISABLE_PLUGINS": "acme"}).registry.names("executor")
    assert "acme" not in skip and {"python", "other"} <= set(skip)


def test_trace_prints_hook_calls(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acme(site)
    plugins = build_plugin_manager({"ORK_TRACE_PLUGINS": "1"})
    plugins.hooks.run_finished(run_id="r1", workflow_name="wf", status="success")
    err = capsys.readouterr().err
    assert "ork_register_executors -> acme" in err
    assert "ork_run_finished(run_id='r1'" in err
    assert "returned" in err


def test_inline_plugin_objects_register_like_entry_points() -> None:
    class Inline:
        @hookimpl
        def ork_register_executors(self, register):  # type: ignore[no-untyped-def]
            register("inline", "ork_core.python_executor:PythonExecutor")

    plugins = build_plugin_manager({"ORK_DISABLE_PLUGINS": "1"}, plugins=[Inline()])
    assert "inline" in plugins.registry.names("executor")


def test_ork_executors_in_an_empty_folder_lists_the_builtins(cli: Cli, tmp_path: Path) -> None:
    result = cli("executors", "--json", cwd=tmp_path)
    assert result.code == 0
    rows = json.loads(result.out)
    assert [r["name"] for r in rows] == ["python"]
    assert set(rows[0]) >= {"name", "source", "distribution", "version", "status", "error"}
    assert rows[0]["source"] == "built-in"

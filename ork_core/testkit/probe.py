"""Checking what importing a plugin's registration module costs, in a fresh interpreter.

ork imports every registration module each time it starts, so one must import nothing but
what ork-core already depends on, and never the executor module it registers. A module
already imported by the test process would hide that cost, hence the child interpreter:
it imports ``ork`` first (the baseline every plugin may use), then the registration module,
calls its registration hooks with a recording ``register``, and reports what was added.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from ork_core.plugins import PLUGIN_API_VERSION
from ork_core.registry import Registration
from ork_core.testkit.harness import child_env

_PROBE = r"""
import importlib, inspect, json, sys
spec = json.loads(sys.argv[1])
out = {"error": None, "new": [], "dists": {}, "api": None, "has_api": False, "registered": []}
import ork  # ork-core and its dependencies: the baseline every plugin may use
before = set(sys.modules)
try:
    obj = importlib.import_module(spec["module"])
    out["has_api"] = hasattr(obj, "ORK_PLUGIN_API")
    out["api"] = str(getattr(obj, "ORK_PLUGIN_API", None))
    for part in filter(None, spec["attr"].split(".")):
        obj = getattr(obj, part)
    for hook, kind in (("ork_register_executors", "executor"), ("ork_register_job_trackers", "tracker"),
                       ("ork_register_storage", "storage")):
        fn = getattr(obj, hook, None)
        if fn is None:
            continue
        def register(name, target, _kind=kind):
            out["registered"].append([_kind, name, target if isinstance(target, str) else
                                      f"{target.__module__}:{target.__qualname__}", isinstance(target, str)])
        fn(**({"register": register} if "register" in inspect.signature(fn).parameters else {}))
except BaseException as exc:
    import traceback
    out["error"] = "".join(traceback.format_exception(exc))
new = sorted(set(sys.modules) - before)
out["new"] = new
try:
    import importlib.metadata as md
    mapping = md.packages_distributions()
except Exception:
    mapping = {}
out["dists"] = {top: mapping.get(top, []) for top in sorted({m.split(".")[0] for m in new})}
print(json.dumps(out))
"""


def dependency_closure(distribution: str) -> set[str]:
    """Normalised names of `distribution` and everything it requires (extras excluded)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = str(canonicalize_name(todo.pop()))
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(req.name)
    return seen


@dataclass(frozen=True)
class Probe:
    module: str
    attr: str
    new_modules: list[str]
    dists: dict[str, list[str]]
    api: str | None
    registered: list[tuple[str, str, str, bool]]
    error: str | None


def probe(entry: str) -> Probe:
    module, _, attr = entry.partition(":")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps({"module": module, "attr": attr})],
        capture_output=True, text=True, env=child_env(), timeout=120,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(f"importing {entry!r} in a fresh interpreter failed:\n{proc.stderr.strip()}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Probe(
        module, attr, data["new"], data["dists"], data["api"] if data["has_api"] else None,
        [(str(k), str(n), str(t), bool(lazy)) for k, n, t, lazy in data["registered"]], data["error"],
    )


def registration_entry(reg: Registration) -> tuple[str, str] | None:
    """The ``module[:attr]`` that registered `reg` and a label for messages; None if not installed."""
    if reg.source.origin == "builtin":
        return reg.source.plugin, "ork's built-in plugin"
    if reg.source.origin != "entrypoint" or not reg.source.distribution:
        return None
    import importlib.metadata

    eps = [
        ep for ep in importlib.metadata.distribution(reg.source.distribution).entry_points
        if ep.group == "ork" and ep.name == reg.source.plugin
    ]
    if not eps:
        raise AssertionError(f"{reg.source.label} has no 'ork' entry point named {reg.source.plugin!r}")
    return eps[0].value, f"entry point {reg.source.plugin!r} of {reg.source.label}"


def check_registration(reg: Registration, entry: str, label: str) -> None:
    """Raise AssertionError naming the first thing that makes importing `entry` costly or wrong."""
    found = probe(entry)
    assert found.error is None, f"importing {label} ({entry}) failed:\n{found.error}"
    if reg.source.origin != "builtin":
        assert found.api is not None, (
            f"{found.module} does not declare ORK_PLUGIN_API; add ORK_PLUGIN_API = \">=1,<2\" so an ork with "
            "a different plugin API can tell you apart"
        )
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        assert Version(PLUGIN_API_VERSION) in SpecifierSet(found.api), (
            f"{found.module} declares ORK_PLUGIN_API = {found.api!r}, which excludes this ork's plugin API "
            f"{PLUGIN_API_VERSION}"
        )
    eager = [f"{kind} {name!r} -> {target}" for kind, name, target, lazy in found.registered if not lazy]
    assert not eager, (
        f"{found.module} registers classes instead of lazy 'module:Class' strings ({'; '.join(eager)}): "
        "pass the target as a string so the module is imported on first use only"
    )
    targets = {target.partition(":")[0] for kind, _, target, _ in found.registered if kind in ("executor", "tracker")}
    imported = sorted(m for m in targets if m in found.new_modules and m != found.module)
    assert not imported, (
        f"importing {found.module} also imports {', '.join(imported)}: the registration module must not "
        "import the executor module, or every `ork` command pays for it"
    )
    from packaging.utils import canonicalize_name

    allowed = dependency_closure("ork-core")
    own = {found.module.split(".")[0]}
    if reg.source.distribution:
        allowed.add(str(canonicalize_name(reg.source.distribution)))
    foreign = []
    for top, dists in found.dists.items():
        if top in sys.stdlib_module_names or top in own:
            continue
        if not {str(canonicalize_name(d)) for d in dists} & allowed:
            foreign.append(f"{top} ({', '.join(sorted(set(dists))) or 'no installed distribution'})")
    assert not foreign, (
        f"importing {found.module} imports {', '.join(foreign)}, which ork-core does not depend on: "
        "move those imports into the executor module (it is imported only when a workflow uses it)"
    )

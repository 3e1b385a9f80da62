"""``ork new executor``: render the cookiecutter-executor template into a new plugin package.

cookiecutter is an optional dependency (``pip install 'ork-core[authoring]'``): it is only
needed the day someone starts a plugin, and keeping it (with requests, arrow and the rest)
out of ork-core's dependencies keeps ork thin and keeps the conformance kit's rule honest,
since a registration module may import only what ork-core depends on.

The name rules live here and, repeated, in the template's ``hooks/pre_gen_project.py``
(a plain ``cookiecutter`` run may not have ork installed); the template test checks that
both refuse the same names.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ork_core.errors import OrkError

KINDS = ("sync", "deferred")
TEMPLATE_ENV = "ORK_EXECUTOR_TEMPLATE"
TEMPLATE_DIR = "cookiecutter-executor"
MAX_NAME_LENGTH = 40
_VALID = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_RESERVED = {"python": "is ork's built-in executor type"}


class ScaffoldError(OrkError, ValueError):
    """Raised when ``ork new`` cannot render: a bad name, a missing template or cookiecutter."""


def executor_name_problem(name: str) -> str | None:
    """Why `name` cannot be an executor name, or None when it can."""
    if not name.strip():
        return "it is empty; give a short name such as 'acme'"
    lowered = name.strip().lower()
    if lowered.startswith(("ork-executor", "ork_executor")):
        rest = lowered[len("ork-executor"):].strip("-_")
        example = repr(rest) if _VALID.fullmatch(rest) else "'acme'"
        return f"give the short name, such as {example}: the package is called ork-executor-<name> for you"
    if any(c.isspace() for c in name):
        fixed = re.sub(r"\s+", "-", name.strip().lower())
        hint = f"; use {fixed!r}" if _VALID.fullmatch(fixed) else ""
        return f"it contains a space{hint}"
    if name[0].isdigit():
        return "it must start with a letter: the executor class and the Python package are named after it"
    if name != name.lower() and _VALID.fullmatch(name.lower()):
        return f"it must be lower case; use {name.lower()!r}"
    if not _VALID.fullmatch(name):
        return "use only lower-case letters and digits, with single '-' or '_' between them (e.g. 'acme', 'dbt-cloud')"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is longer than {MAX_NAME_LENGTH} characters"
    if name in _RESERVED:
        return f"{name!r} {_RESERVED[name]}; pick another name"
    return None


def check_executor_name(name: str) -> None:
    """Raise `ScaffoldError` with the reason when `name` cannot be an executor name."""
    problem = executor_name_problem(name)
    if problem:
        raise ScaffoldError(f"executor name {name!r} is not valid: {problem}")


def distribution_name(name: str) -> str:
    return "ork-executor-" + name.replace("_", "-")


def stdin_is_terminal() -> bool:
    """Whether ``ork new`` may ask questions (tests replace this to drive the prompts)."""
    return sys.stdin.isatty()


def _git_config(key: str) -> str | None:
    try:
        out = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


@dataclass(frozen=True)
class ExecutorAnswers:
    """The template's variables; the derived names are computed by the template itself."""

    name: str
    description: str
    author_name: str
    author_email: str
    kind: str = "sync"
    version: str = "0.1.0"

    @classmethod
    def defaults(cls, name: str) -> ExecutorAnswers:
        """Defaults for every value: the author from ``git config`` when there is one."""
        return cls(
            name=name,
            description=f"Run {name} jobs from ork workflows.",
            author_name=_git_config("user.name") or "Your Name",
            author_email=_git_config("user.email") or "you@example.com",
        )

    def context(self) -> dict[str, str]:
        return {
            "executor_name": self.name,
            "description": self.description,
            "author_name": self.author_name,
            "author_email": self.author_email,
            "kind": self.kind,
            "version": self.version,
        }


def find_template(explicit: str | None = None) -> str:
    """The template to render: `explicit` (a path or git URL), else the one beside ork_core."""
    if explicit:
        if "://" in explicit or explicit.startswith("gh:") or explicit.startswith("git@"):
            return explicit
        path = Path(explicit).expanduser()
        if not (path / "cookiecutter.json").is_file():
            raise ScaffoldError(f"template {explicit!r} is not a cookiecutter template (no cookiecutter.json in {path})")
        return str(path.resolve())
    here = Path(__file__).resolve().parent
    # the wheel carries it inside the package; a checkout (or an editable install) has it at the top
    candidates = (here / "executor_template", here.parent / TEMPLATE_DIR)
    for bundled in candidates:
        if (bundled / "cookiecutter.json").is_file():
            return str(bundled)
    raise ScaffoldError(
        f"the executor template is not installed with this ork-core (looked in {' and '.join(map(str, candidates))}); "
        f"pass --template PATH_OR_URL (or set {TEMPLATE_ENV}) to the cookiecutter-executor folder of an ork checkout"
    )


def render_executor(
    answers: ExecutorAnswers, output_dir: Path, *, template: str | None = None
) -> Path:
    """Render the template into ``output_dir/ork-executor-<name>`` and return that folder."""
    check_executor_name(answers.name)
    if answers.kind not in KINDS:
        raise ScaffoldError(f"kind {answers.kind!r} is not one of {', '.join(KINDS)}")
    for key, value in (("description", answers.description), ("author", answers.author_name), ("email", answers.author_email)):
        if "\n" in value or "\r" in value:
            raise ScaffoldError(f"{key} must be a single line")
    target = output_dir / distribution_name(answers.name)
    if target.exists():
        raise ScaffoldError(f"{target} already exists; remove it or pass another --output-dir")
    source = find_template(template)
    try:
        from cookiecutter.exceptions import CookiecutterException, FailedHookException  # type: ignore[import-untyped]
        from cookiecutter.main import cookiecutter  # type: ignore[import-untyped]
    except ImportError:
        raise ScaffoldError(
            "ork new needs cookiecutter, an optional dependency: pip install 'ork-core[authoring]'"
        ) from None
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ork-new-") as tmp:
        # a private cookiecutter config: no replay files or template cache in the user's home,
        # and no ~/.cookiecutterrc defaults changing what `ork new` renders
        config = Path(tmp) / "cookiecutter.yaml"
        config.write_text(  # JSON is YAML, which cookiecutter reads
            json.dumps({"replay_dir": str(Path(tmp) / "replay"), "cookiecutters_dir": str(Path(tmp) / "templates")})
        )
        try:
            rendered = cookiecutter(
                source, no_input=True, extra_context=answers.context(), output_dir=str(output_dir),
                config_file=str(config),
            )
        except FailedHookException as exc:
            raise ScaffoldError(f"the template refused these values ({exc}); its message is above") from None
        except CookiecutterException as exc:
            raise ScaffoldError(f"rendering {source} failed: {type(exc).__name__}: {exc}") from None
    return Path(rendered)


__all__ = [
    "KINDS",
    "ExecutorAnswers",
    "ScaffoldError",
    "check_executor_name",
    "distribution_name",
    "executor_name_problem",
    "find_template",
    "render_executor",
    "stdin_is_terminal",
]

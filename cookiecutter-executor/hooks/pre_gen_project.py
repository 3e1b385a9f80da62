"""Refuse values that would make a broken package, before anything is written.

The same rules as ``ork new executor`` (ork_core/scaffold.py), repeated here because a
plain ``cookiecutter`` run of this template may not have ork installed.
"""

from __future__ import annotations

import re
import sys

NAME = {{ cookiecutter.executor_name | tojson }}
ONE_LINE = {
    "description": {{ cookiecutter.description | tojson }},
    "author_name": {{ cookiecutter.author_name | tojson }},
    "author_email": {{ cookiecutter.author_email | tojson }},
}
VERSION = {{ cookiecutter.version | tojson }}

VALID = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
RESERVED = {"python": "is ork's built-in executor type"}
MAX_LENGTH = 40


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an executor name, or None when it can."""
    if not name.strip():
        return "it is empty; give a short name such as 'acme'"
    lowered = name.strip().lower()
    if lowered.startswith(("ork-executor", "ork_executor")):
        rest = lowered[len("ork-executor"):].strip("-_")
        example = repr(rest) if VALID.fullmatch(rest) else "'acme'"
        return f"give the short name, such as {example}: the package is called ork-executor-<name> for you"
    if any(c.isspace() for c in name):
        fixed = re.sub(r"\s+", "-", name.strip().lower())
        hint = f"; use {fixed!r}" if VALID.fullmatch(fixed) else ""
        return f"it contains a space{hint}"
    if name[0].isdigit():
        return "it must start with a letter: the executor class and the Python package are named after it"
    if name != name.lower() and VALID.fullmatch(name.lower()):
        return f"it must be lower case; use {name.lower()!r}"
    if not VALID.fullmatch(name):
        return "use only lower-case letters and digits, with single '-' or '_' between them (e.g. 'acme', 'dbt-cloud')"
    if len(name) > MAX_LENGTH:
        return f"it is longer than {MAX_LENGTH} characters"
    if name in RESERVED:
        return f"{name!r} {RESERVED[name]}; pick another name"
    return None


def main() -> int:
    problems = []
    problem = name_problem(NAME)
    if problem:
        problems.append(f"executor_name {NAME!r} is not valid: {problem}")
    for key, value in ONE_LINE.items():
        if "\n" in value or "\r" in value:
            problems.append(f"{key} must be a single line")
    if not re.fullmatch(r"\d+(\.\d+)*([ab]|rc)?\d*", VERSION):
        problems.append(f"version {VERSION!r} is not a version number like '0.1.0'")
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Docs that must not drift from the code: the hook reference and the README's commands."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import ork_core.hookspecs as hookspecs

REPO = Path(__file__).resolve().parents[1]


def test_every_hook_has_a_section_headed_with_its_exact_signature() -> None:
    text = (REPO / "docs" / "hooks.md").read_text()
    headings = set(re.findall(r"^### `(ork_\w+\([^)]*\))`$", text, flags=re.M))
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("ork_"):
            continue
        params = ", ".join(inspect.signature(func).parameters)
        assert f"{name}({params})" in headings, f"docs/hooks.md has no section '### `{name}({params})`'"


def test_readme_gives_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "ork run examples/elt/workflow.yaml" in readme
    ci = (REPO / ".ci" / "run").read_text()
    blocks = re.findall(r"^```sh\n(.*?)\n```", readme, flags=re.M | re.S)
    assert "bash scripts/test.sh" in blocks
    assert "bash scripts/test.sh" in ci


def test_every_command_has_a_section_in_the_cli_reference() -> None:
    from ork_core.cli import main

    text = (REPO / "docs" / "cli.md").read_text()
    headed = set(re.findall(r"^## .*?`ork ([a-z-]+)", text, flags=re.M)) | set(re.findall(r"/ `ork ([a-z-]+)", text))
    missing = [name for name in main.commands if name not in headed]
    assert not missing, f"docs/cli.md has no section for: {missing}"

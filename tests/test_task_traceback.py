"""What a failing task logs: its traceback from its own code on, without ork's frames above it."""

from __future__ import annotations

from pathlib import Path

from orkhelpers import run_in_process, write


def test_the_logged_traceback_starts_in_the_tasks_code(project: Path, fresh_modules: None) -> None:
    write(project / "tasks.py", """
        def helper():
            raise RuntimeError("boom")

        def f() -> int:
            helper()
            return 1
        """)
    flow = write(project / "wf.yaml", "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n")
    result, record = run_in_process(project, flow)
    assert record.tasks["a"].error == "RuntimeError: boom"
    from ork_core.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(f"sqlite:///{project / '.ork' / 'ork.db'}")
    text = "\n".join(line.line for line in storage.logs(record.id, "a"))
    storage.close()
    assert text.startswith("Traceback (most recent call last):\n  File ") and "tasks.py\", line 5, in f" in text, text
    assert "ork_core" not in text and "asyncio" not in text, text
    assert text.rstrip().endswith("RuntimeError: boom")

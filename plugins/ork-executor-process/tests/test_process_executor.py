"""The process executor through ork's real scheduler (``ork.testing.run_task``), real processes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ork import WorkflowError
from ork.testing import TaskResult, run_task
from ork_executor_process.config import ProcessTask
from ork_core.proctree import group_members

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")


def run(project: Path, **task: Any) -> TaskResult:
    options = {k: task.pop(k) for k in ("timeout", "upstream", "params", "config", "cancel_after") if k in task}
    return run_task("process", task=task, project_dir=project, **options)


def attempt_dir(project: Path, result: TaskResult, attempt: int = 1) -> Path:
    return project / ".ork" / "artifacts" / result.run_id / "task" / str(attempt)


# -- success, output, artifacts --------------------------------------------------------------------


def test_default_output_is_exit_code_and_duration(project: Path) -> None:
    result = run(project, command=["sh", "-c", "echo hello; echo warn >&2"])
    assert result.ok, result.describe()
    assert set(result.output) == {"exit_code", "duration_s"} and result.output["exit_code"] == 0
    assert 0 <= result.output["duration_s"] < 30
    assert "hello" in result.logs and "warn" in result.logs
    folder = attempt_dir(project, result)
    assert (folder / "stdout.log").read_bytes() == b"hello\n"
    assert (folder / "stderr.log").read_bytes() == b"warn\n"


def test_logs_and_attempt_folders_are_owner_only(project: Path) -> None:
    result = run(project, command=["sh", "-c", "echo hello; echo warn >&2"])
    assert result.ok, result.describe()
    folder = attempt_dir(project, result)
    for path in (folder / "stdout.log", folder / "stderr.log"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (folder, folder.parent, folder.parent.parent, project / ".ork" / "artifacts"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_output_from_ork_output_with_artifacts(project: Path) -> None:
    script = 'printf "%s" "{\\"rows\\": 3}" > "$ORK_OUTPUT"; mkdir -p "$ORK_ARTIFACT_DIR/sub"; printf abc > "$ORK_ARTIFACT_DIR/sub/a.txt"'
    result = run(project, command=["sh", "-c", script], artifacts=True)
    assert result.ok, result.describe()
    assert result.output["rows"] == 3
    (artifact,) = result.output["artifacts"]
    assert artifact["name"] == "sub/a.txt" and artifact["size"] == 3
    assert artifact["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert Path(artifact["path"]).read_bytes() == b"abc"
    assert Path(artifact["path"]).parent.parent == attempt_dir(project, result)


def test_last_line_json(project: Path) -> None:
    result = run(project, command=["sh", "-c", 'echo working; echo \'{"ok": true}\'; echo'], output="last_line_json")
    assert result.ok and result.output == {"ok": True}, result.describe()
    result = run(project, command=["sh", "-c", "echo not json"], output="last_line_json")
    assert result.status == "failed" and "last stdout line is not JSON" in (result.error or "")


def test_quiet_commands_cost_no_folder_and_artifacts_are_opt_in(project: Path) -> None:
    result = run(project, command=["sh", "-c", 'echo "${ORK_ARTIFACT_DIR-unset}" >&2; true'])
    assert result.ok and "unset" in result.logs
    quiet = run(project, command=["true"])
    assert not attempt_dir(project, quiet).exists()  # nothing printed, no artifacts asked for
    empty = run(project, command=["true"], artifacts=True)
    assert empty.output["artifacts"] == [] and attempt_dir(project, empty).is_dir()


def test_invalid_output_file(project: Path) -> None:
    result = run(project, command=["sh", "-c", 'echo "{oops" > "$ORK_OUTPUT"'])
    assert result.status == "failed" and "$ORK_OUTPUT" in (result.error or "") and "not valid JSON" in (result.error or "")


def test_environment_variables(project: Path) -> None:
    result = run(
        project,
        command=["sh", "-c", 'echo "$ORK_TASK $ORK_ATTEMPT $GREETING $HOME_SET"; echo "$ORK_PARAMS"'],
        env={"GREETING": "hi {{ params.who }}", "HOME_SET": "${HOME:+yes}"},
        params={"who": "ann"},
    )
    assert result.ok, result.describe()
    assert "task 1 hi ann ${HOME:+yes}" in result.logs  # no shell: values are taken literally
    assert json.loads(result.logs[1]) == {"who": "ann"}


def test_inherit_env_false(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORK_TEST_SECRET", "s3cret")
    command = ["/usr/bin/env"]
    shared = run(project, command=command)
    alone = run(project, command=command, inherit_env=False, env={"ONLY": "me"})
    assert "ORK_TEST_SECRET=s3cret" in shared.logs
    assert "ORK_TEST_SECRET=s3cret" not in alone.logs and "ONLY=me" in alone.logs
    assert all(line.startswith(("ORK_", "ONLY=")) for line in alone.logs if "=" in line)


def test_templates_use_params_and_upstream(project: Path) -> None:
    result = run(
        project,
        command=["echo", "{{ params.day }}", "{{ extract.rows }}", "{{ upstream.extract.table }}"],
        params={"day": "2024-01-02"},
        upstream={"extract": {"rows": 7, "table": "t1"}},
    )
    assert result.ok, result.describe()
    assert "2024-01-02 7 t1" in result.logs


def test_templates_see_the_run_under_ork(project: Path) -> None:
    from ork_core.storage.base import RunOrigin

    origin = RunOrigin(
        trigger="schedule", schedule="0", logical_ts=1, logical_date="2026-12-03T06:00:00+01:00",
        interval_start="2026-12-02T06:00:00+01:00", interval_end="2026-12-03T06:00:00+01:00",
    )
    command = ["echo", "{{ ork.trigger }} {{ ork.interval_start[:10] }} {{ ork.logical_date }} {{ ork.run_id }}"]
    result = run_task("process", task={"command": command}, project_dir=project, origin=origin)
    assert result.ok, result.describe()
    assert f"schedule 2026-12-02 2026-12-03T06:00:00+01:00 {result.run_id}" in result.logs
    manual = run(project, command=["echo", "{{ ork.trigger }} {{ ork.interval_start }}"])
    assert "manual None" in manual.logs, manual.describe()


def test_undefined_template_variable(project: Path) -> None:
    result = run(project, command=["echo", "{{ params.missing }}"])
    assert result.status == "failed" and "tasks.task.command[1]" in (result.error or ""), result.describe()


def test_shell_and_cwd(project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "x.csv").write_text("1\n2\n3\n")
    result = run(project, command="wc -l < x.csv | tr -d ' '", shell=True, cwd="data")
    assert result.ok and "3" in result.logs, result.describe()
    assert "tasks.task.cwd: 'nowhere' not found" in refused(project, command=["true"], cwd="nowhere")


def test_script_with_args_and_shebang(project: Path) -> None:
    script = project / "scripts" / "hello.sh"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\necho "args: $*"\n')  # not executable: run through its #! line
    result = run(project, script="scripts/hello.sh", args=["a", "{{ params.b }}"], params={"b": "bee"})
    assert result.ok and "args: a bee" in result.logs, result.describe()
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert run(project, script="scripts/hello.sh").ok
    plain = project / "plain.txt"
    plain.write_text("echo from interpreter\n")
    result = run(project, script="plain.txt")
    assert result.status == "failed" and "not executable and has no #! line" in (result.error or "")
    result = run(project, script="plain.txt", interpreter=["sh"])
    assert result.ok and "from interpreter" in result.logs, result.describe()


# -- failures -------------------------------------------------------------------------------------


def test_nonzero_exit_names_the_code_and_stderr(project: Path) -> None:
    result = run(project, command=["sh", "-c", "echo 'table missing' >&2; exit 3"])
    assert result.status == "failed"
    assert result.error == "command exited with code 3; last stderr: table missing"


def test_death_by_signal(project: Path) -> None:
    result = run(project, command=["sh", "-c", "kill -9 $$"])
    assert result.error == "command was killed by signal SIGKILL (9)"
    result = run(project, command="sleep 30 & kill -15 $!; wait $!", shell=True)
    assert result.error is not None and "exited with code 143" in result.error and "SIGTERM" in result.error


def test_command_not_found(project: Path) -> None:
    result = run(project, command=["ork-no-such-tool", "--x"])
    assert result.status == "failed"
    assert (result.error or "").startswith("command 'ork-no-such-tool' not found on PATH (")


def test_script_outside_the_project(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "evil.sh"
    outside.write_text("#!/bin/sh\necho no\n")
    error = refused(project, script=str(outside))
    assert "outside the project folder" in error and str(outside) in error
    assert "outside the project folder" in refused(project, script="../" * 8 + "etc/passwd")


def refused(project: Path, **task: Any) -> str:
    """Why a task with a bad path did not run: caught by validation, or failed at run time."""
    try:
        result = run(project, **task)
    except WorkflowError as exc:
        return str(exc)
    assert result.status == "failed", result.describe()
    return result.error or ""


@pytest.mark.parametrize("key", ["script", "cwd"])
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_script_and_cwd_outside_the_project_are_refused(
    project: Path, tmp_path_factory: pytest.TempPathFactory, key: str, how: str
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "evil.sh").write_text("#!/bin/sh\necho no\n")
    (outside / "evil.sh").chmod(0o755)
    target = outside / "evil.sh" if key == "script" else outside
    if how == "dotdot":
        raw = "../" * len(project.parts) + str(target).lstrip("/")
    elif how == "absolute":
        raw = str(target)
    else:
        (project / "link").symlink_to(target)
        raw = "link"
    task: dict[str, Any] = {"script": raw} if key == "script" else {"command": ["true"], "cwd": raw}
    error = refused(project, **task)
    assert f"tasks.task.{key}: {raw!r} resolves to {target.resolve()}, outside the project folder" in error, error
    assert "allowed_path_roots" in error


def test_allowed_path_roots_lets_a_script_and_cwd_out(tmp_path: Path) -> None:
    project, outside = tmp_path / "proj", tmp_path / "shared"
    project.mkdir()
    outside.mkdir()
    (outside / "hello.sh").write_text("#!/bin/sh\necho hello from $(pwd)\n")
    (outside / "hello.sh").chmod(0o755)
    (project / "ork.yaml").write_text("allowed_path_roots: [../shared]\n")
    (project / "flow.yaml").write_text(
        "name: w\ntasks:\n  a: {executor: process, script: ../shared/hello.sh, cwd: ../shared}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    done = subprocess.run([sys.executable, "-m", "ork_core", "run", "flow.yaml"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_validate_finds_what_would_fail_at_run_time(tmp_path: Path) -> None:
    """Through `ork validate` (exit 1) and `ork run` (exit 2, nothing runs), as a user runs them."""
    (tmp_path / "ork.yaml").write_text("executors: {}\n")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "bad.yaml").write_text("command: [echo\n")
    (tmp_path / "typo.yaml").write_text("comand: [echo]\n")
    (tmp_path / "flow.yaml").write_text(
        "name: w\n"
        "tasks:\n"
        "  a: {executor: process, script: scripts/missing.sh}\n"
        "  b: {executor: process, command: [ls], cwd: nowhere}\n"
        "  c: {executor: process, command: [echo, '{{ params.x '], cwd: jobs}\n"
        "  d: {executor: process, command: [env], env: {X: '{% if %}'}}\n"
        "  e: {executor: process, config_file: bad.yaml}\n"
        "  f: {executor: process, config_file: typo.yaml}\n"
        "  g: {executor: process, script: '{{ params.which }}.sh'}\n"  # templated: judged when it runs
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    ork = [sys.executable, "-m", "ork_core"]
    validated = subprocess.run([*ork, "validate", "flow.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    ran = subprocess.run([*ork, "run", "flow.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (validated.returncode, ran.returncode) == (1, 2), validated.stderr + ran.stderr
    assert ran.stdout == "" and ran.stderr == validated.stderr
    lines = validated.stderr.splitlines()[1:]
    flow = tmp_path / "flow.yaml"
    assert lines == [
        f"  {flow}:3: tasks.a.script: 'scripts/missing.sh' not found (looked for {tmp_path}/scripts/missing.sh)",
        f"  {flow}:4: tasks.b.cwd: 'nowhere' not found (looked for {tmp_path}/nowhere)",
        f"  {flow}:5: tasks.c.command[1]: template syntax error on line 1: unexpected end of template, "
        "expected 'end of print statement'.",
        f"  {flow}:6: tasks.d.env.X: template syntax error on line 1: Expected an expression, got 'end of statement block'",
        f"  {tmp_path}/bad.yaml:2: invalid YAML: while parsing a flow sequence did not find expected ',' or ']'",
        f"  {tmp_path}/typo.yaml:1: comand: unknown key 'comand' (did you mean 'command'?); valid keys: "
        + ", ".join(sorted(ProcessTask.model_fields)),
    ], validated.stderr


def test_non_utf8_output_fails_with_the_line(project: Path) -> None:
    result = run(project, command=["printf", "fine\\nbad \\377 byte\\n"])
    assert result.status == "failed", result.describe()
    assert "stdout line 2 is not valid utf-8 (byte 0xff at position 4)" in (result.error or "")
    assert "stdout.log" in (result.error or "")
    assert "bad \\xff byte" in result.logs  # still logged, escaped
    replaced = run(project, command=["printf", "bad \\377\\n"], encoding_errors="replace")
    assert replaced.ok and "bad \ufffd" in replaced.logs
    latin = run(project, command=["printf", "caf\\351\\n"], encoding="latin-1")
    assert latin.ok and "café" in latin.logs


def test_bad_task_keys_are_validation_errors(project: Path) -> None:
    from ork_core.errors import WorkflowError

    for task, message in [
        ({"command": "ls -l"}, "needs 'shell: true'"),
        ({"command": ["ls"], "script": "x.sh"}, "exactly one of 'command'"),
        ({"command": ["ls"], "encoding": "utf-99"}, "unknown encoding"),
        ({"command": ["ls"], "outptu": "file"}, "outptu"),
    ]:
        with pytest.raises(WorkflowError, match=message):
            run(project, **task)
    with pytest.raises(WorkflowError, match="exactly one of 'command'"):
        run(project)  # no executor keys at all, and no config_file that could hold them
    # keys split between config_file and the task: the executor's check() judges the whole
    (project / "cmd.yaml").write_text("command: [echo, '{\"n\": 1}']\n")
    result = run(project, config_file="cmd.yaml", output="last_line_json")
    assert result.ok and result.output == {"n": 1}, result.describe()
    with pytest.raises(WorkflowError, match="outptu"):
        run(project, config_file="cmd.yaml", outptu="file")
    (project / "both.yaml").write_text("script: x.sh\n")
    with pytest.raises(WorkflowError, match="workflow.yaml:4: tasks.task: .*exactly one of 'command'"):
        run(project, config_file="both.yaml", command=["ls"])


# -- the process tree -------------------------------------------------------------------------


def test_timeout_leaves_no_process_of_the_group(project: Path) -> None:
    started = time.monotonic()
    result = run(project, command=["sh", "-c", "echo $$ > pgid; sleep 300 & sleep 300"], timeout=1.0)
    assert result.status == "failed" and result.error == "timed out after 1s", result.describe()
    assert time.monotonic() - started < 10
    assert group_members(int((project / "pgid").read_text())) == []


def test_timeout_also_ends_a_process_that_left_the_session(project: Path) -> None:
    """``setsid`` takes a process out of the group and the session; its environment still marks it."""
    script = 'setsid sh -c "echo \\$\\$ > pgid-escaped; exec sleep 300" & echo $$ > pgid; sleep 300'
    result = run(project, command=["sh", "-c", script], timeout=1.0)
    assert result.status == "failed" and result.error == "timed out after 1s", result.describe()
    escaped = int((project / "pgid-escaped").read_text())
    assert escaped != int((project / "pgid").read_text())
    assert group_members(escaped) == [] and group_members(int((project / "pgid").read_text())) == []


def test_sigterm_ignored_is_killed_after_the_grace_period(project: Path) -> None:
    script = "echo $$ > pgid; trap '' TERM; sleep 300 & while :; do sleep 0.1; done"
    result = run(project, command=["sh", "-c", script], timeout=0.5, grace_period=1.5)
    assert result.status == "failed"
    assert 2.0 <= result.elapsed < 8.0, result.elapsed  # 0.5 s timeout + 1.5 s grace, then SIGKILL
    assert group_members(int((project / "pgid").read_text())) == []


def test_cancel_ends_the_tree(project: Path) -> None:
    result = run(project, command=["sh", "-c", "echo $$ > pgid; sleep 300 & sleep 300"], cancel_after=0.5)
    assert result.status == "cancelled", result.describe()
    assert group_members(int((project / "pgid").read_text())) == []


def test_leftover_background_processes_are_ended(project: Path) -> None:
    result = run(project, command=["sh", "-c", "echo $$ > pgid; sleep 300 & echo done"])
    assert result.ok, result.describe()
    assert any("left 1 process(es)" in line for line in result.logs)
    assert group_members(int((project / "pgid").read_text())) == []


def test_a_leftover_that_left_the_session_is_ended_too(project: Path) -> None:
    """It keeps the task's stdout open, so ork notices it, and its environment says whose it is."""
    script = (
        'setsid sh -c "echo \\$\\$ > pgid-escaped.tmp; mv pgid-escaped.tmp pgid-escaped; exec sleep 300" & '
        "while [ ! -s pgid-escaped ]; do sleep 0.01; done; echo done"  # it has left the session by now
    )
    started = time.monotonic()
    result = run(project, command=["sh", "-c", script])
    assert result.ok, result.describe()
    assert time.monotonic() - started < 10
    assert any("left 1 process(es)" in line for line in result.logs), result.logs
    assert group_members(int((project / "pgid-escaped").read_text())) == []


def test_retries_get_a_fresh_attempt_folder(project: Path) -> None:
    script = 'echo "$ORK_ATTEMPT" > "$ORK_ARTIFACT_DIR/n"; [ "$ORK_ATTEMPT" -ge 2 ]'
    result = run(project, command=["sh", "-c", script], retries=2, artifacts=True)
    assert result.ok and result.attempts == 2, result.describe()
    assert result.output["artifacts"][0]["path"].endswith("/task/2/n")
    assert result.output["artifacts"][0]["name"] == "n"


def test_log_limit_keeps_the_file_whole(project: Path) -> None:
    script = f"{sys.executable} -c \"import sys; [print('line %05d' % i) for i in range(3000)]\""
    result = run(project, command=script, shell=True, log_max_bytes=1000)
    assert result.ok, result.describe()
    kept = [line for line in result.logs if line.startswith("line ")]
    assert 0 < len(kept) <= 1000 // 11
    assert any("more bytes not kept in the log" in line for line in result.logs)
    assert (attempt_dir(project, result) / "stdout.log").read_text().count("\n") == 3000


def test_long_lines_are_logged_in_pieces(project: Path) -> None:
    script = f"{sys.executable} -c \"print('é' * 100000)\""
    result = run(project, command=script, shell=True, max_line_bytes=1000)
    assert result.ok, result.describe()
    pieces = [line for line in result.logs if line.startswith("é")]
    assert "".join(pieces) == "é" * 100000 and all(len(p.encode()) <= 1000 for p in pieces)


# -- templates and other tasks' timeouts -------------------------------------------------------------


def test_a_heavy_template_does_not_time_out_other_tasks(project: Path) -> None:
    """Rendering happened on ork's event loop, so other tasks' deadlines ran out meanwhile."""
    import os
    import subprocess
    import textwrap

    from ork_core.storage.sqlite import SQLiteStorage

    heavy = "{% for i in range(100000) %}{% for j in range(500) %}{% endfor %}{% endfor %}rendered"  # ~3 s here
    quick = "".join(f"  q{i}: {{executor: process, command: ['true'], timeout: 1}}\n" for i in range(6))
    (project / "ork.yaml").write_text("executors: {}\n")
    (project / "wf.yaml").write_text(
        textwrap.dedent(f"""\
        name: w
        tasks:
          heavy: {{executor: process, command: [echo, "{heavy}"]}}
        """) + quick
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORK_")}
    done = subprocess.run(
        [sys.executable, "-m", "ork_core", "run", "wf.yaml"], cwd=project, env=env, capture_output=True, text=True,
        timeout=120,
    )
    storage = SQLiteStorage(f"sqlite:///{project / '.ork' / 'ork.db'}")
    try:
        (run,) = storage.list_runs()
        tasks = storage.get_run(run.id).tasks
    finally:
        storage.close()
    errors = {name: t.error for name, t in tasks.items() if t.status != "success"}
    assert done.returncode == 0 and not errors, (errors, done.stdout[-2000:], done.stderr[-2000:])

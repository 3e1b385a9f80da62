"""The ``process`` executor: a local command (or script) as a task, owning its process tree.

``run`` is a coroutine that awaits the command on ork's event loop (no thread per task;
only a task with templates renders them in a thread, off the loop). The
command leads its own session; a timeout or Ctrl-C cancels the coroutine, and the tree is
ended — SIGTERM, ``grace_period``, SIGKILL, checked through /proc — before the task is
marked failed or cancelled. The group id is committed to storage while the command runs, so
``ork resume`` after ork itself was killed ends what was left running before it starts the
task again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shlex
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ork import Context, PathError, Problem, TaskError, executor, load_task_config
from ork_core.context import ork_variables
from ork_core.proctree import Completed, TreeProcess, task_markers, tree_alive
from ork_executor_process.config import ProcessConfig, ProcessTask
from ork_executor_process.results import (
    exit_problem,
    failure_message,
    last_line_json,
    list_artifacts,
    read_output_file,
)
from ork_executor_process.streams import OutputRecorder

T = TypeVar("T")

if TYPE_CHECKING:
    from ork import TaskWhere


def template_variables(ctx: Context, upstream: Mapping[str, Any]) -> dict[str, Any]:
    """What templates in a process task can use: ``params``, ``upstream``, ``ork`` and each upstream task by name."""
    return {**upstream, "params": ctx.params, "upstream": upstream, "ork": ork_variables(ctx)}


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def _render(value: Any, variables: Mapping[str, Any], ctx: Context, key: str) -> Any:
    """Render the templates in `value`; Jinja is imported only by a task that has one."""
    if not _has_template(value):
        return value
    from ork_core.templating import render_value

    return render_value(value, variables, source=f"tasks.{ctx.task_name}.{key}")


async def _off_loop(templated: bool, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a thread when the task has templates, else right here.

    A template may take long to render (loops, big upstream outputs), and `run` is on ork's
    event loop, where every other task's deadline runs: rendering there timed them out.
    A task without templates costs no thread hop.
    """
    if templated:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _script_argv(task: ProcessTask, ctx: Context, variables: Mapping[str, Any]) -> list[str]:
    """The argv that runs `task.script`: via `interpreter`, directly, or via its #! line."""
    raw = str(_render(task.script, variables, ctx, "script"))
    path = ctx.resolve_path(raw, field=f"tasks.{ctx.task_name}.script", must_exist="file")
    args = [str(a) for a in _render(task.args, variables, ctx, "args")]
    if task.interpreter:
        return [*task.interpreter, str(path), *args]
    if os.access(path, os.X_OK):
        return [str(path), *args]
    with open(path, "rb") as fh:
        first = fh.readline(4096)
    if first.startswith(b"#!") and first[2:].strip():
        program, *rest = first[2:].decode("utf-8", "replace").strip().split(None, 1)
        return [program, *rest, str(path), *args]
    raise TaskError(
        f"tasks.{ctx.task_name}.script: {path} is not executable and has no #! line; "
        "chmod +x it, add a #! line, or set 'interpreter', e.g. interpreter: [bash]"
    )


def _argv(task: ProcessTask, ctx: Context, variables: Mapping[str, Any]) -> list[str]:
    if task.script is not None:
        return _script_argv(task, ctx, variables)
    command = _render(task.command, variables, ctx, "command")
    if task.shell:
        return ["/bin/sh", "-c", str(command)]
    return [str(part) for part in command]


def _start_error(exc: OSError, argv: list[str], env: Mapping[str, str]) -> TaskError:
    """A clear message for a command that could not be started at all."""
    program = argv[0]
    if isinstance(exc, FileNotFoundError):
        where = "" if "/" in program else f" on PATH ({env.get('PATH', os.defpath)})"
        return TaskError(f"command {program!r} not found{where}")
    if isinstance(exc, PermissionError):
        return TaskError(f"cannot run {program!r}: permission denied (is it executable?)")
    if exc.errno == errno.ENOEXEC:
        return TaskError(f"cannot run {program!r}: exec format error (a script without a #! line?)")
    return TaskError(f"cannot run {program!r}: {exc.strerror or exc}")


OWN_FILES = frozenset({"stdout.log", "stderr.log"})
"""Files ork itself writes in the attempt folder: not listed as the task's artifacts."""


@executor(task_config=ProcessTask)
class ProcessExecutor:
    """Runs a local command, script or shell line as a task.

    Output lines go to the task's log and, byte for byte, to ``stdout.log`` / ``stderr.log``
    in the attempt's folder. The task's output is the JSON the command writes to
    ``$ORK_OUTPUT`` (or its last stdout line with ``output: last_line_json``), else
    ``{exit_code, duration_s}``. With ``artifacts: true`` the command gets the attempt folder
    as ``$ORK_ARTIFACT_DIR`` and the files it writes there are listed in the output with
    size and sha256.
    """

    def __init__(self, config: ProcessConfig) -> None:
        self.config = config
        self._running: dict[tuple[str, str, int], TreeProcess] = {}
        self._environ = dict(os.environ)  # ork's environment when the run started
        self._outputs: set[str] = set()
        """$ORK_OUTPUT files not read yet (in ork's scratch folder, `ctx.ensure_scratch_dir()`;
        the output itself goes to storage); what a failed attempt left goes at close."""
        self._params_json: tuple[dict[str, Any], str] | None = None

    def _params(self, params: dict[str, Any]) -> str:
        """``$ORK_PARAMS``: the run's parameters as JSON, encoded once per run rather than per task."""
        if self._params_json is None or self._params_json[0] is not params:
            self._params_json = (params, json.dumps(params, default=str))
        return self._params_json[1]

    def _env(self, task: ProcessTask, ctx: Context, variables: Mapping[str, Any]) -> dict[str, str]:
        inherit = self.config.inherit_env if task.inherit_env is None else task.inherit_env
        env = dict(self._environ) if inherit else {}
        env.update(self.config.env)
        if ctx.env:
            env.update({k: str(v) for k, v in _render(ctx.env, variables, ctx, "env").items()})
        env.update(
            {
                "ORK_WORKFLOW": ctx.workflow_name,
                "ORK_TRY_NUMBER": str(ctx.try_number),
                "ORK_IDEMPOTENCY_KEY": ctx.idempotency_key,
                "ORK_PARAMS": self._params(ctx.params),
            }
        )
        return env

    @staticmethod
    def check(task: Mapping[str, Any], where: TaskWhere) -> list[Problem]:
        """``ork validate``: the merged task keys, template syntax, and a ``script``/``cwd`` that is
        not a template exists inside the project. Nothing is run."""
        settings, problems = where.task_config(ProcessTask)
        if settings is None:
            return problems
        for key in ("command", "script", "args", "cwd"):
            problems += where.templates(getattr(settings, key), key)
        problems += where.templates(dict(where.env), "env")
        for key, kind in (("script", "file"), ("cwd", "dir")):
            raw = getattr(settings, key)
            if raw is None or _has_template(raw):
                continue
            try:
                where.resolve_path(raw, field=key, must_exist=kind)  # type: ignore[arg-type]
            except PathError as exc:
                problems.append(where.problem(key, exc.reason))
        return problems

    async def run(self, config_file: str, ctx: Context, upstream: dict[str, object] = {}) -> Any:  # noqa: B006 - the executor contract
        task = load_task_config(ProcessTask, config_file, ctx)
        variables = template_variables(ctx, upstream)
        templated = _has_template([task.command, task.script, task.args, task.cwd, ctx.env])
        argv = await _off_loop(templated, _argv, task, ctx, variables)
        cwd = ctx.workflow_dir
        if task.cwd is not None:
            raw_cwd = str(await _off_loop(templated, _render, task.cwd, variables, ctx, "cwd"))
            cwd = ctx.resolve_path(raw_cwd, field=f"tasks.{ctx.task_name}.cwd", must_exist="dir")
        env = await _off_loop(templated, self._env, task, ctx, variables)
        recorder = OutputRecorder(
            ctx,
            encoding=task.encoding,
            errors=task.encoding_errors,
            log_max_bytes=task.log_max_bytes if task.log_max_bytes is not None else self.config.log_max_bytes,
        )

        output_file = f"{ctx.ensure_scratch_dir()}/{ctx.run_id}.{ctx.task_name}.{ctx.attempt}.json"
        env["ORK_OUTPUT"] = output_file
        self._outputs.add(output_file)
        artifacts = self.config.artifacts if task.artifacts is None else task.artifacts

        def prepare() -> dict[str, str] | None:
            # runs in the starting thread; a folder costs two mkdirs, so only tasks that asked for one pay
            if not artifacts:
                return None
            try:
                recorder.folder = ctx.ensure_artifact_dir()
            except OSError as exc:
                raise TaskError(f"cannot create the attempt folder for $ORK_ARTIFACT_DIR: {exc}") from None
            return {"ORK_ARTIFACT_DIR": str(recorder.folder)}

        tree = TreeProcess(
            argv,
            cwd=cwd,
            env=env,
            on_lines=recorder.lines,
            on_chunk=recorder.chunk,
            on_start=ctx.record_process_group,
            prepare=prepare,
            markers=task_markers(ctx.run_id, ctx.task_name, ctx.attempt),
            grace=task.grace_period if task.grace_period is not None else self.config.grace_period,
            max_line=task.max_line_bytes or self.config.max_line_bytes,
        )
        key = (ctx.run_id, ctx.task_name, ctx.attempt)
        self._running[key] = tree
        try:
            completed = await tree.run()
        except OSError as exc:
            if tree.pid is None:
                raise _start_error(exc, argv, env) from None
            raise
        finally:
            self._running.pop(key, None)
            recorder.close()
            # cleared only once nothing of the group is left; otherwise `ork resume` must still end it
            if tree.pid is not None and (tree.gone or not tree_alive(tree.pid)):
                ctx.record_process_group(None)
        return await self._result(task, ctx, argv, completed, recorder, output_file, artifacts)

    async def _result(
        self,
        task: ProcessTask,
        ctx: Context,
        argv: list[str],
        completed: Completed,
        recorder: OutputRecorder,
        output_file: str,
        artifacts: bool,
    ) -> Any:
        if completed.leftovers:
            ctx.log.warning(
                "the command exited but left %d process(es) of its group running; ork ended them", completed.leftovers
            )
        if completed.unclosed:
            ctx.log.warning(
                "%s was still open after the task's processes ended (held by a process that left the session); "
                "stopped reading it",
                " and ".join(completed.unclosed),
            )
        problem = exit_problem(completed, shell=task.shell)
        if problem is not None:
            ctx.log.error("%s: %s", problem, shlex.join(argv)[:1000])
            raise TaskError(failure_message(problem, recorder))
        if recorder.decode_error is not None and recorder.decode_error_stream is not None:
            raise TaskError(
                f"{recorder.decode_error}; the raw bytes are in {recorder.path(recorder.decode_error_stream)}; "
                "set 'encoding' to the output's encoding, or encoding_errors: replace to accept it"
            )
        # read (and removed) here; what a failed attempt left goes when the executor closes
        self._outputs.discard(output_file)
        if task.output == "file":
            written, result = read_output_file(output_file)
        else:
            written, result = False, None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(output_file)
        listed: list[dict[str, Any]] = []
        folder = recorder.folder
        if artifacts and folder is not None and any(name not in OWN_FILES for name in os.listdir(folder)):
            # hashing may read gigabytes: not on the event loop
            listed = await asyncio.get_running_loop().run_in_executor(None, list_artifacts, folder, OWN_FILES)
        if task.output == "last_line_json":
            result = last_line_json(recorder)
        elif not written:
            summary: dict[str, Any] = {"exit_code": completed.returncode, "duration_s": round(completed.duration, 6)}
            if artifacts:
                summary["artifacts"] = listed
            return summary
        if listed and isinstance(result, dict) and "artifacts" not in result:
            result["artifacts"] = listed
        return result

    async def cancel(self, ctx: Context) -> None:
        """End the task's tree (the scheduler calls this on timeout or cancel, before marking the task)."""
        tree = self._running.get((ctx.run_id, ctx.task_name, ctx.attempt))
        if tree is not None:
            await tree.end()

    async def close(self) -> None:
        for tree in list(self._running.values()):
            await tree.end()
        self._running.clear()
        for path in self._outputs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._outputs.clear()


__all__ = ["ProcessConfig", "ProcessExecutor", "ProcessTask", "template_variables"]

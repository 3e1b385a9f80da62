"""What a process task and the process executor accept, checked by ``ork validate``."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

DEFAULT_LOG_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_LINE_BYTES = 64 * 1024


class ProcessConfig(BaseModel):
    """Executor-wide defaults (``executors.<name>.config`` in ork.yaml); a task may override each."""

    model_config = ConfigDict(extra="forbid")

    grace_period: NonNegativeFloat = Field(
        5.0, description="seconds between SIGTERM and SIGKILL when a task is timed out or cancelled, or ork is stopped by a signal"
    )
    log_max_bytes: NonNegativeInt | None = Field(
        DEFAULT_LOG_MAX_BYTES,
        description="bytes per stream kept in the state database (the files keep everything); null: no limit",
    )
    max_line_bytes: PositiveInt = Field(
        DEFAULT_MAX_LINE_BYTES, description="a longer output line is logged in pieces of this size"
    )
    inherit_env: bool = Field(True, description="start from ork's environment (false: only the task's env and ORK_*)")
    artifacts: bool = Field(
        False,
        description="create the attempt folder before each command starts and pass it as $ORK_ARTIFACT_DIR; "
        "files written there are listed in the output",
    )
    env: dict[str, str] = Field(default_factory=dict, description="variables every task of this executor gets")


class ProcessTask(BaseModel):
    """The keys a ``process`` task writes in the workflow (or in its ``config_file``).

    String values in ``command``, ``script``, ``args``, ``cwd`` and the task's ``env`` are
    Jinja templates over ``params``, ``upstream`` and each upstream task's output by name.
    """

    model_config = ConfigDict(extra="forbid")

    command: str | list[str] | None = Field(
        None, description="argument list (no shell), or a string run by /bin/sh when shell: true"
    )
    shell: bool = Field(False, description="run the string command with /bin/sh -c")
    script: str | None = Field(None, description="a file in the project, relative to the workflow file")
    args: list[str] = Field(default_factory=list, description="arguments passed to the script")
    interpreter: list[str] | None = Field(
        None, description="run the script with this (e.g. [bash] or [python3, -u]) instead of its #! line"
    )
    cwd: str | None = Field(None, description="working directory, relative to the workflow file (default: its folder)")
    inherit_env: bool | None = Field(None, description="override the executor's inherit_env for this task")
    artifacts: bool | None = Field(None, description="override the executor's artifacts for this task")
    output: Literal["file", "last_line_json"] = Field(
        "file",
        description="file: JSON the command writes to $ORK_OUTPUT (else {exit_code, duration_s}); "
        "last_line_json: the last stdout line, parsed as JSON",
    )
    grace_period: NonNegativeFloat | None = Field(None, description="override the executor's grace_period")
    encoding: str = Field("utf-8", description="how output bytes are decoded for the log")
    encoding_errors: Literal["strict", "replace", "backslashreplace"] = Field(
        "strict", description="strict: a line that does not decode fails the task"
    )
    log_max_bytes: NonNegativeInt | None = Field(None, description="override the executor's log_max_bytes")
    max_line_bytes: PositiveInt | None = Field(None, description="override the executor's max_line_bytes")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}; use a Python codec name such as utf-8 or latin-1") from None
        return value

    @model_validator(mode="after")
    def _one_program(self) -> ProcessTask:
        if (self.command is None) == (self.script is None):
            raise ValueError("give exactly one of 'command' (an argument list, or a string with shell: true) or 'script'")
        if self.command is not None:
            if isinstance(self.command, str) and not self.shell:
                raise ValueError(
                    "a string 'command' needs 'shell: true'; without a shell write it as a list, e.g. [ls, -l]"
                )
            if isinstance(self.command, list) and self.shell:
                raise ValueError("'shell: true' needs 'command' as one string, e.g. \"ls -l | wc -l\"")
            if not self.command or (isinstance(self.command, list) and not self.command[0]):
                raise ValueError("'command' is empty")
            if self.args or self.interpreter:
                raise ValueError("'args' and 'interpreter' go with 'script'; put arguments in the 'command' list")
        elif self.shell:
            raise ValueError("'shell: true' goes with a string 'command', not with 'script'")
        if self.interpreter is not None and not self.interpreter:
            raise ValueError("'interpreter' must name a program, e.g. [bash]")
        return self

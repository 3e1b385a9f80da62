"""A corpus of malformed workflows and ork.yaml files, each through the real ``ork run`` and ``ork validate``.

For every file: ``ork run`` exits 2 and ``ork validate`` exits 1 (both are the CLI's codes for
invalid input; a bad ork.yaml is also checked by ``ork validate`` alone), stderr names the file (and the line, where there is one), no exception escapes
the CLI (which a user would see as a traceback), and each answer comes within 5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orkhelpers import REPO

TASKS = "def f(x: int = 0) -> int:\n    return x\n"
OK_WF = "name: w\ntasks:\n  a: {file: tasks.py, function: f}\n"


@dataclass
class Case:
    """One malformed input: the files of a project folder, which file the error must name, and its line."""

    name: str
    files: dict[str, str | bytes]
    names: str = "wf.yaml"
    line: int | None = None
    special: str = ""  # "fifo", "dir" or "devzero": that file is made so instead of written
    extra: dict[str, str] = field(default_factory=dict)


def wf(text: str, name: str, line: int | None = None, **extra: str) -> Case:
    return Case(name, {"wf.yaml": text, **extra}, "wf.yaml", line)


def proj(text: str, name: str, line: int | None = None, workflow: str = OK_WF, **extra: str) -> Case:
    return Case(name, {"wf.yaml": workflow, "ork.yaml": text, **extra}, "ork.yaml", line)


def task_key(key: str, value: str) -> str:
    return f"name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    {key}: {value}\n"


LAUGHS = "".join(f"  {n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
BOMB = "  a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS


def corpus() -> list[Case]:
    cases = [
        # --- not a workflow at all
        wf("", "empty"),
        wf("\n\n   \n", "blank lines"),
        wf("# only a comment\n# and another\n", "only comments"),
        wf("---\n", "only a document marker"),
        wf("---\n...\n", "an empty document"),
        wf("- a\n- b\n", "a list at top level", 1),
        wf("just a string\n", "a string at top level", 1),
        wf("42\n", "a number at top level", 1),
        wf("null\n", "null at top level"),
        wf("name: w\ntasks:\n  a: {file: tasks.py}\n---\nname: v\n", "two documents", 4),
        # --- YAML syntax
        wf("name: w\ntasks:\n\ta: {file: tasks.py, function: f}\n", "a tab in indentation", 3),
        wf('name: "w\ntasks:\n  a: {}\n', "unterminated double-quoted string"),
        wf("name: 'w\ntasks:\n  a: {}\n", "unterminated single-quoted string"),
        wf("name: w\ntasks: {a: {file: tasks.py, function: f}\n", "unterminated flow mapping"),
        wf("name: w\ntasks:\n  a:\n    depends_on: [b, c\n", "unterminated flow list"),
        wf("name: w\n  tasks: x\n", "bad indentation", 2),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f}\n b: 1\n", "dedent to nowhere", 4),
        wf("name: w\ntasks: ]\n", "a stray closing bracket", 2),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  - b\n", "a list item inside a mapping", 4),
        wf("name: w\nname: v\ntasks:\n  a: {file: tasks.py, function: f}\n", "duplicate top-level key", 2),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  a: {file: tasks.py, function: f}\n", "duplicate task", 4),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f, function: g}\n", "duplicate task key", 3),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f\x00}\n", "a NUL character"),
        wf("name: w\x07\ntasks:\n  a: {file: tasks.py, function: f}\n", "a control character"),
        wf("name: &x w\ntasks: *y\n", "an undefined alias", 2),
        wf("name: w\nparams:\n  a: &a [*a]\n" + OK_WF[8:], "a recursive alias in a list", 3),
        wf("name: w\nparams: &p\n  a: *p\n" + OK_WF[8:], "a recursive alias in a mapping", 3),
        wf("name: w\nparams:\n" + BOMB + OK_WF[8:], "an alias bomb in params", 8),
        wf("name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    inputs:\n"
           + "".join("      " + line[2:] for line in BOMB.splitlines(keepends=True)), "an alias bomb in inputs", 12),
        wf('name: w\nparams: {1: a, "1": b}\n' + OK_WF[8:], "mixed key types", 2),
        wf("name: w\nparams:\n  [1, 2]: a\n" + OK_WF[8:], "a list as a key", 3),
        wf("name: w\nparams:\n  ? {a: 1}\n  : b\n" + OK_WF[8:], "a mapping as a key", 3),
        wf("name: w\ntasks:\n  1: {file: tasks.py, function: f}\n", "an integer task name", 3),
        wf("name: w\ntasks:\n  yes: {file: tasks.py, function: f}\n", "a boolean task name", 3),
        wf("name: w\ntasks:\n  ~: {file: tasks.py, function: f}\n", "a null task name", 3),
        wf("name: w\nparams: {d: !!binary aGVsbG8=}\n" + OK_WF[8:], "a !!binary param", 2),
        wf("name: w\nparams: !!set {a, b}\n" + OK_WF[8:], "a !!set", 2),
        wf("name: w\nparams: !!omap [a: 1]\n" + OK_WF[8:], "an !!omap", 2),
        wf("name: w\nparams: {d: !!timestamp 2024-01-01}\n" + OK_WF[8:], "a !!timestamp", 2),
        wf("name: w\nparams: {d: !!python/object/apply:os.system [id]}\n" + OK_WF[8:], "a !!python tag", 2),
        wf("name: !!python/name:os.system w\n" + OK_WF[8:], "a !!python/name tag", 1),
        wf("name: w\nparams: {d: !env HOME}\n" + OK_WF[8:], "a local tag", 2),
        wf("name: w\nparams: {d: !!int twelve}\n" + OK_WF[8:], "a bad !!int", 2),
        wf("name: w\nparams: {d: !!float x}\n" + OK_WF[8:], "a bad !!float", 2),
        wf("name: w\nparams: {d: !!bool maybe}\n" + OK_WF[8:], "a bad !!bool", 2),
        wf("name: w\nparams: {d: .inf}\n" + OK_WF[8:], "an infinite param", 2),
        wf("name: w\nparams: {d: 1e400}\n" + OK_WF[8:], "a param that overflows to infinity", 2),
        wf("name: w\nparams: {d: " + "9" * 5000 + "}\n" + OK_WF[8:], "a 5000-digit integer", 2),
        wf("name: w\nparams:\n  d: " + "[" * 1000 + "]" * 1000 + "\n" + OK_WF[8:], "1000 nested lists", 3),
        wf("name: w\nparams:\n  d: " + "{a: " * 500 + "1" + "}" * 500 + "\n" + OK_WF[8:], "500 nested mappings", 3),
        wf("name: w\nparams:\n  <<: 5\n" + OK_WF[8:], "a merge of a scalar", 3),
        Case("bad UTF-8", {"wf.yaml": b"name: w\ntasks:\n  a: {file: t\xffsks.py, function: f}\n"}, "wf.yaml", 3),
        Case("Latin-1 text", {"wf.yaml": "name: w\ndescription: caf\xe9\n".encode("latin-1") + OK_WF[8:].encode()}, "wf.yaml", 2),
        Case("UTF-16 text", {"wf.yaml": OK_WF.encode("utf-16")}, "wf.yaml"),
        Case("a FIFO", {}, "wf.yaml", special="fifo"),
        Case("a directory", {}, "wf.yaml", special="dir"),
        Case("a link to /dev/zero", {}, "/dev/zero", special="devzero"),
        Case("a file over 10 MiB", {}, "wf.yaml", special="huge"),
        # --- the workflow's keys
        wf("tasks:\n  a: {file: tasks.py, function: f}\n", "no name", 1),
        wf("name: w\n", "no tasks", 1),
        wf("name: w\ntasks: {}\n", "no task in tasks", 2),
        wf("name: w\ntasks: [a, b]\n", "tasks as a list", 2),
        wf("name: w\ntasks: a\n", "tasks as a string", 2),
        wf("name: w\ntask:\n  a: {file: tasks.py, function: f}\n", "an unknown top-level key", 2),
        wf("name: [w]\n" + OK_WF[8:], "name as a list", 1),
        wf("name: 5\n" + OK_WF[8:], "name as a number", 1),
        wf("name: has space\n" + OK_WF[8:], "name with a space", 1),
        wf('name: "w\\n"\n' + OK_WF[8:], "name with a trailing newline", 1),
        wf("name: w\ndescription: [a]\n" + OK_WF[8:], "description as a list", 2),
        wf("name: w\nparams: [a, b]\n" + OK_WF[8:], "params as a list", 2),
        wf('name: w\nparams: {"a b": 1}\n' + OK_WF[8:], "a param name with a space", 2),
        wf('name: w\nparams: {"x\\n": 1}\n' + OK_WF[8:], "a param name with a newline", 2),
        wf("name: w\nmax_concurrency: 0\n" + OK_WF[8:], "max_concurrency 0", 2),
        wf("name: w\nmax_concurrency: -3\n" + OK_WF[8:], "max_concurrency negative", 2),
        wf("name: w\nmax_concurrency: true\n" + OK_WF[8:], "max_concurrency true", 2),
        wf("name: w\nmax_concurrency: '4'\n" + OK_WF[8:], "max_concurrency a string", 2),
        wf("name: w\nmax_concurrency: 2.5\n" + OK_WF[8:], "max_concurrency a fraction", 2),
        wf("name: w\nmax_concurrency: 99999999999999999999999\n" + OK_WF[8:], "max_concurrency huge", 2),
        # --- tasks
        wf("name: w\ntasks:\n  a: [1]\n", "a task as a list", 3),
        wf("name: w\ntasks:\n  a: text\n", "a task as a string", 3),
        wf("name: w\ntasks:\n  a: 5\n", "a task as a number", 3),
        wf('name: w\ntasks:\n  "abc\\n": {file: tasks.py, function: f}\n', "a task name with a newline", 3),
        wf('name: w\ntasks:\n  "a b": {file: tasks.py, function: f}\n', "a task name with a space", 3),
        wf("name: w\ntasks:\n  9a: {file: tasks.py, function: f}\n", "a task name starting with a digit", 3),
        wf(task_key("depend_on", "[b]"), "an unknown task key (typo)", 6),
        wf(task_key("depends_on", "[a]"), "self-dependency", 6),
        wf(task_key("depends_on", "[nope]"), "an unknown dependency", 6),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  b: {file: tasks.py, function: f, depends_on: [a, a]}\n",
           "a dependency listed twice", 4),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f, depends_on: [b]}\n  b: {file: tasks.py, function: f, depends_on: [a]}\n",
           "a two-task cycle", 3),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f, depends_on: [c]}\n  b: {file: tasks.py, function: f, depends_on: [a]}\n"
           "  c: {file: tasks.py, function: f, depends_on: [b]}\n", "a three-task cycle", 3),
        wf("name: w\ntasks:\n  a:\n    executor: nope\n    depends_on: [b]\n  b: {file: tasks.py, function: f, depends_on: [a]}\n",
           "a cycle through a broken task", 4),
        wf(task_key("executor", "pyton"), "an unknown executor", 6),
        wf(task_key("executor", "[python]"), "executor as a list", 6),
        wf(task_key("executor", "nomodule:Nope"), "an executor module:Class that is not configured", 6),
        wf("name: w\ntasks:\n  a:\n    file: tasks.py\n", "python task without function", 3),
        wf("name: w\ntasks:\n  a:\n    file: tasks.py\n    module: tasks\n    function: f\n", "python task with file and module", 3),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f, functon: g}\n", "an unknown python task key", 3),
        wf(task_key("config_file", "missing.yaml"), "a missing config_file", 6),
        wf(task_key("config_file", "[a]"), "config_file as a list", 6),
        wf("name: w\ntasks:\n  a: {file: tasks.py, function: f}\n  b:\n    file: tasks.py\n    function: f\n    inputs:\n      x: {ref: tasks.a.output}\n",
           "a ref to a task not depended on", 8),
        wf("name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    inputs:\n      x: {ref: a.output}\n", "a malformed ref", 7),
        wf("name: w\nparams: {day: x}\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    inputs:\n      x: {param: dya}\n",
           "an unknown param binding", 8),
        wf("name: w\ntasks:\n  a:\n    file: tasks.py\n    function: f\n    inputs:\n      x: {run: date}\n", "an unknown run binding", 7),
        # --- schedule:
        wf("name: w\nschedule: '0 6 * * *'\n" + OK_WF[8:], "schedule: a string", 2),
        wf("name: w\nschedule: []\n" + OK_WF[8:], "schedule: an empty list", 2),
        wf("name: w\nschedule: [5]\n" + OK_WF[8:], "schedule: a number in the list", 2),
        wf("name: w\nschedule:\n  timezone: UTC\n" + OK_WF[8:], "schedule: no cron", 2),
        wf("name: w\nschedule:\n  cron: 0 6 * *\n" + OK_WF[8:], "schedule: a four-field cron", 3),
        wf("name: w\nschedule:\n  cron: '61 * * * *'\n" + OK_WF[8:], "schedule: a minute out of range", 3),
        wf("name: w\nschedule:\n  cron: '@sometimes'\n" + OK_WF[8:], "schedule: an unknown alias", 3),
        wf("name: w\nschedule:\n  cron: [0, 6]\n" + OK_WF[8:], "schedule: cron as a list", 3),
        wf("name: w\nschedule:\n  cron: '0 0 30 2 *'\n" + OK_WF[8:], "schedule: a cron that never fires", 3),
        wf("name: w\nschedule:\n  cron: '@daily'\n  timezone: Europe/Berln\n" + OK_WF[8:], "schedule: an unknown time zone", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  timezone: ../../etc/passwd\n" + OK_WF[8:], "schedule: a time zone that is a path", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  start: 2026-01-02\n  end: 2026-01-01\n" + OK_WF[8:], "schedule: end before start", 5),
        wf("name: w\nschedule:\n  cron: '@daily'\n  start: soon\n" + OK_WF[8:], "schedule: start not a date", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  end: 2026-02-30\n" + OK_WF[8:], "schedule: a day that does not exist", 4),
        wf("name: w\nschedule:\n  cron: '0 0 * * *'\n  start: '2026-01-01T01:00'\n  end: '2026-01-01T23:00'\n" + OK_WF[8:],
           "schedule: no tick between start and end", 3),
        wf("name: w\nschedule:\n  cron: '@daily'\n  catchup: 1\n" + OK_WF[8:], "schedule: catchup 1", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  max_active_runs: 0\n" + OK_WF[8:], "schedule: max_active_runs 0", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  max_active_runs: true\n" + OK_WF[8:], "schedule: max_active_runs true", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  max_active_runs: 1e9\n" + OK_WF[8:], "schedule: max_active_runs huge", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  catch_up: true\n" + OK_WF[8:], "schedule: an unknown key", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  params: [a]\n" + OK_WF[8:], "schedule: params as a list", 4),
        wf("name: w\nparams: {day: x}\nschedule:\n  cron: '@daily'\n  params: {dya: y}\n" + OK_WF[8:], "schedule: an unknown param", 5),
        wf("name: w\nparams: {n: 1}\nschedule:\n  cron: '@daily'\n  params: {n: one}\n" + OK_WF[8:], "schedule: a param of the wrong type", 5),
        wf("name: w\nschedule:\n  - {cron: '@daily', name: n}\n  - {cron: '@hourly', name: n}\n" + OK_WF[8:], "schedule: a duplicate name", 4),
        wf("name: w\nschedule:\n  cron: '@daily'\n  name: 'night ly'\n" + OK_WF[8:], "schedule: a name with a space", 4),
    ]
    bad_values = {
        "retries": ["true", "'3'", "2.5", "-1", "many", "1000000000000000000000000", "[1]"],
        "retry_delay": ["true", "'5'", "-1", ".inf", ".nan", "1e300", "1e400", "90000", "{a: 1}"],
        "retry_backoff": ["0", "-2", "1e308", ".inf", "false"],
        "max_retry_delay": ["-1", "1e9", ".inf", "'1h'"],
        "timeout": ["0", "-1", ".inf", ".nan", "1e300", "yes", "'30s'"],
        "on_failure": ["always", "true", "[run]"],
        "env": ["[A]", "{A: 1}", "{A: [x]}", "A=1", '{"A=B": x}', '{"": x}', '{A: "x\\0y"}'],
        "description": ["[x]", "{a: 1}", "5"],
        "depends_on": ["b", "{b: 1}", "[1]"],
    }
    for key, values in bad_values.items():
        cases += [wf(task_key(key, v), f"{key}: {v}", 6) for v in values]
    # --- ork.yaml
    module = "from ork import executor\n"
    cases += [
        proj("- a\n", "ork.yaml: a list", 1),
        proj("42\n", "ork.yaml: a number", 1),
        proj("executors: [1, 2]\n", "ork.yaml: executors as a list", 1),
        proj("executor:\n  a: {type: python}\n", "ork.yaml: an unknown key", 1),
        proj("executors:\n  a:\n    config: {}\n", "ork.yaml: an executor without type", 2),
        proj("executors:\n  a:\n    type: 5\n", "ork.yaml: type as a number", 3),
        proj("executors:\n  a: {type: python, max_concurrency: 0}\n", "ork.yaml: executor max_concurrency 0", 2),
        proj("executors:\n  a: {type: python, max_concurrency: true}\n", "ork.yaml: executor max_concurrency true", 2),
        proj("executors:\n  a: {type: python, max_concurrency: 1e9}\n", "ork.yaml: executor max_concurrency huge", 2),
        proj("executors:\n  a: {type: python, colour: red}\n", "ork.yaml: an unknown executor key", 2),
        proj("executors:\n  a: {type: python, config: [1]}\n", "ork.yaml: config as a list", 2),
        proj('executors:\n  "bq\\n": {type: python}\n', "ork.yaml: an executor name with a newline", 2),
        proj("max_concurrency: '4'\n", "ork.yaml: max_concurrency a string", 1),
        proj("max_concurrency: -1\n", "ork.yaml: max_concurrency negative", 1),
        proj("max_concurrency: .inf\n", "ork.yaml: max_concurrency infinite", 1),
        proj("max_concurrency: 10000000000000000000000\n", "ork.yaml: max_concurrency huge", 1),
        proj("storage: [a]\n", "ork.yaml: storage as a list", 1),
        proj("executors: {a: {type: python}\n", "ork.yaml: unterminated flow mapping"),
        proj("executors:\n\ta: 1\n", "ork.yaml: a tab", 2),
        proj("executors:\n  a: {type: python}\n  a: {type: python}\n", "ork.yaml: a duplicate executor", 3),
        proj("executors:\n  p:\n    type: python\n    config:\n" + "".join("    " + l for l in BOMB.splitlines(keepends=True)),
             "ork.yaml: an alias bomb", 10),
        proj("executors: &e\n  a: *e\n", "ork.yaml: a recursive alias", 2),
        proj("executors:\n  1: {type: python}\n", "ork.yaml: an integer executor name", 2),
        proj("executors: !!set {a}\n", "ork.yaml: a !!set", 1),
        proj("executors:\n  a: {type: !!binary aGVsbG8=}\n", "ork.yaml: a !!binary", 2),
        Case("ork.yaml: bad UTF-8", {"wf.yaml": OK_WF, "ork.yaml": b"executors:\n  a: {type: pyth\xc3on}\n"}, "ork.yaml", 2),
        Case("ork.yaml: a FIFO", {"wf.yaml": OK_WF}, "ork.yaml", special="fifo"),
        Case("ork.yaml: a directory", {"wf.yaml": OK_WF}, "ork.yaml", special="dir"),
        proj("executors:\n  bad:\n    type: no_such_module_xyz:Thing\n", "ork.yaml: module:Class, missing module", 3,
             workflow=task_key("executor", "bad")),
        proj("executors:\n  bad:\n    type: corpus_importerror:Thing\n", "ork.yaml: module:Class, module fails to import", 3,
             workflow=task_key("executor", "bad"), **{"corpus_importerror.py": "import no_such_dependency_xyz\n"}),
        proj("executors:\n  bad:\n    type: corpus_raises:Thing\n", "ork.yaml: module:Class, module raises", 3,
             workflow=task_key("executor", "bad"), **{"corpus_raises.py": "raise RuntimeError('boom at import')\n"}),
        proj("executors:\n  bad:\n    type: corpus_syntax:Thing\n", "ork.yaml: module:Class, a syntax error", 3,
             workflow=task_key("executor", "bad"), **{"corpus_syntax.py": "def (:\n"}),
        proj("executors:\n  bad:\n    type: corpus_exits:Thing\n", "ork.yaml: module:Class, module calls sys.exit", 3,
             workflow=task_key("executor", "bad"), **{"corpus_exits.py": "import sys\nsys.exit(0)\n"}),
        proj("executors:\n  bad:\n    type: corpus_noclass:Thing\n", "ork.yaml: module:Class, no such class", 3,
             workflow=task_key("executor", "bad"), **{"corpus_noclass.py": "class Thin:\n    pass\n"}),
        proj("executors:\n  bad:\n    type: corpus_notclass:Thing\n", "ork.yaml: module:Class, not a class", 3,
             workflow=task_key("executor", "bad"), **{"corpus_notclass.py": "Thing = 5\n"}),
        proj("executors:\n  bad:\n    type: corpus_norun:Thing\n", "ork.yaml: module:Class, not an executor", 3,
             workflow=task_key("executor", "bad"), **{"corpus_norun.py": "class Thing:\n    pass\n"}),
        proj("executors:\n  bad:\n    type: corpus_cfg:Thing\n    config: {size: big}\n", "ork.yaml: module:Class, bad config", 4,
             workflow=task_key("executor", "bad"),
             **{"corpus_cfg.py": module + "from pydantic import BaseModel\nclass C(BaseModel):\n    size: int\n"
                "@executor\nclass Thing:\n    def __init__(self, config: C) -> None: ...\n"
                "    def run(self, config_file: str, ctx: object, upstream: dict = {}) -> None: ...\n"}),
        proj("executors:\n  bad:\n    type: corpus_env:Thing\n    config: {size: '${CORPUS_UNSET_VAR_XYZ}'}\n",
             "ork.yaml: module:Class, unset variable", 4, workflow=task_key("executor", "bad"),
             **{"corpus_env.py": module + "from pydantic import BaseModel\nclass C(BaseModel):\n    size: str\n"
                "@executor\nclass Thing:\n    def __init__(self, config: C) -> None: ...\n"
                "    def run(self, config_file: str, ctx: object, upstream: dict = {}) -> None: ...\n"}),
        proj("executors:\n  bad:\n    type: nodist\n", "ork.yaml: an unknown registered type", 3, workflow=task_key("executor", "bad")),
    ]
    return cases


def materialise(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "tasks.py").write_text(TASKS)
    for rel, content in case.files.items():
        (folder / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    target = folder / ("wf.yaml" if case.names.startswith("/") else case.names)
    if case.special == "fifo":
        os.mkfifo(target)
    elif case.special == "dir":
        target.mkdir()
    elif case.special == "devzero":
        target.symlink_to("/dev/zero")
    elif case.special == "huge":
        with target.open("w") as out:
            out.write(OK_WF + "# padding\n")
            out.truncate(11 * 1024 * 1024)
    return folder


def run_corpus(jobs: list[dict[str, object]], tmp: Path) -> list[dict[str, object]]:
    """Run the jobs in 2 child processes (the machine may have 2 cores), each calling the CLI in-process."""
    env = {**os.environ, "ORK_DISABLE_PLUGINS": "1", "PYTHONPATH": str(REPO / "tests")}
    env.pop("ORK_DB", None)
    procs = []
    for i in range(2):
        batch = tmp / f"jobs{i}.json"
        batch.write_text(json.dumps(jobs[i::2]))
        procs.append(subprocess.Popen([sys.executable, str(REPO / "tests" / "badinput_driver.py"), str(batch)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    for i, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # a job the alarm could not stop (stuck in C code)
            p.kill()
            out, err = p.communicate()
        done = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        results += done
        for n, job in enumerate(jobs[i::2][len(done):]):
            what = "hung: the driver was killed after 60 s" if n == 0 else "not run: an earlier job hung"
            results.append({**job, "code": None, "err": err[-400:], "escaped": what, "seconds": 0.0})
    return results


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="needs a POSIX system")
def test_every_malformed_file_gets_one_clear_error(tmp_path: Path) -> None:
    cases = corpus()
    assert len(cases) >= 100
    assert len({c.name for c in cases}) == len(cases)
    folders = {materialise(c, tmp_path / f"case{i:03d}"): c for i, c in enumerate(cases)}
    jobs: list[dict[str, object]] = [
        {"cwd": str(folder), "args": args} for folder in folders for args in (["run", "wf.yaml"], ["validate", "wf.yaml"])
    ]
    # `ork validate` with no workflow checks ork.yaml alone
    jobs += [{"cwd": str(folder), "args": ["validate"]} for folder, case in folders.items() if case.names == "ork.yaml"]
    started = time.monotonic()
    results = run_corpus(jobs, tmp_path)
    elapsed = time.monotonic() - started
    assert len(results) == len(jobs)
    failures = []
    for r in results:
        folder = Path(str(r["cwd"]))
        case = folders[folder]
        command = r["args"][0]  # type: ignore[index]
        err = str(r["err"])
        named = case.names if case.names.startswith("/") else os.path.realpath(folder / case.names)
        wrong = []
        if r["escaped"]:
            wrong.append(f"an exception escaped: {r['escaped']}")
        if r["code"] != (2 if command == "run" else 1):
            wrong.append(f"exit {r['code']}")
        if named not in err:
            wrong.append(f"{named} not named")
        elif case.line is not None and f"{named}:{case.line}:" not in err:
            wrong.append(f"line {case.line} not named")
        if "Traceback" in err:
            wrong.append("a traceback")
        if float(r["seconds"]) > 5:  # type: ignore[arg-type]
            wrong.append(f"took {float(r['seconds']):.1f} s")  # type: ignore[arg-type]
        if wrong:
            failures.append(f"{case.name!r} (ork {command}): {'; '.join(wrong)}\n    {err.strip()[:400]}")
    assert not failures, f"{len(failures)} of {len(results)}:\n" + "\n".join(failures)
    assert elapsed < 60, f"the corpus took {elapsed:.0f} s"

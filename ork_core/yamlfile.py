"""YAML with line numbers, so every error can point at the line a person has to fix.

PyYAML's constructed dicts forget where keys came from; we build the data from parser events
and keep a ``path -> line`` map beside it. Duplicate keys, which PyYAML silently accepts
(last one wins), are reported here because they almost always hide a mistake.

ork's YAML is JSON-shaped, in one place, here: keys are strings, scalars are strings,
finite numbers, booleans or null, dates stay the text they were written as, other tags are
refused. Aliases, nesting and file size are bounded, and only regular files are read, so no
file can make ork hang or exhaust memory; each refusal is a `Problem` naming file and line.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ork_core.errors import Problem

PathT = tuple[str | int, ...]
# libyaml's parser is ~10x faster than PyYAML's pure-Python one; both keep node marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class YamlDoc:
    """A parsed YAML document: the data, the file it came from, and where each path starts."""

    file: str
    data: Any
    lines: dict[PathT, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    text: str = ""
    """The text parsed, so a caller that keeps the source need not read the file twice."""

    def line(self, path: Sequence[str | int]) -> int | None:
        """The line of `path`, or of its closest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def problem(self, path: Sequence[str | int], message: str) -> Problem:
        return Problem(self.file, dotted(path), message, self.line(path))


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def dotted(path: Iterable[str | int]) -> str:
    """``tasks.a.inputs[0]``; a key that is not a plain name is quoted (``params['a b']``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_TAGS = "tag:yaml.org,2002:"
# Explicit scalar tags with a JSON meaning; every other tag (!!binary, !!timestamp, !!set,
# !!python/…, !local) is refused, so what a file says is what JSON can hold.
_SCALAR_TAGS = frozenset(_TAGS + t for t in ("int", "float", "bool", "null"))
_MAPPING_TAGS = (None, "!", _TAGS + "map")
_SEQUENCE_TAGS = (None, "!", _TAGS + "seq")
# Implicitly resolved YAML 1.1 types that JSON lacks stay the text they were written as:
# ``d: 2024-01-01`` is the string "2024-01-01" (validate and run see the same value).
_AS_WRITTEN = frozenset(_TAGS + t for t in ("timestamp", "value", "merge"))
# YAML 1.1 wants a dot in a float (``1e3`` is a string there); JSON and YAML 1.2 do not.
_EXPONENT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")

MAX_FILE_BYTES = 10 * 1024 * 1024
"""Largest YAML file ork reads (a 10,000-task workflow is about 1 MiB)."""
MAX_ALIAS_VALUES = 100_000
"""Values aliases may repeat in one file (or as many as the file writes out, if more): a
"billion laughs" file of a few lines would otherwise expand to billions downstream."""
MAX_DEPTH = 200
"""Deepest nesting of mappings and lists; deeper data would overflow recursive consumers."""


class _Bad(Exception):
    """A document ork refuses, with the line (and path) the reader was at."""

    def __init__(self, message: str, line: int | None = None, path: PathT | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.path = message, line, path


def _brief(text: str) -> str:
    """`text` cut to a length a message can hold."""
    return text if len(text) <= 40 else text[:37] + "..."


def _short(tag: str) -> str:
    return "!!" + tag[len(_TAGS):] if tag.startswith(_TAGS) else tag


_TAG_CACHE: dict[str, str] = {}


def _scalar(loader: yaml.SafeLoader, event: yaml.ScalarEvent) -> Any:
    """A scalar's JSON value: str, int, float, bool or None; anything else is a `_Bad`."""
    tag = event.tag
    value: str = event.value
    if tag is None:
        if not event.implicit[0]:
            return value  # quoted: always a string
        tag = _TAG_CACHE.get(value)
        if tag is None:
            tag = loader.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
            if tag in _AS_WRITTEN or (tag == _STR and _EXPONENT.fullmatch(value)):
                tag = _STR if tag != _STR else _TAGS + "float"
            if len(_TAG_CACHE) < 4096:
                _TAG_CACHE[value] = tag
        if tag == _STR:
            return value
    elif tag == "!" or tag == _STR:
        return value
    elif tag not in _SCALAR_TAGS:
        raise _Bad(f"unsupported tag {_short(tag)}; ork reads JSON-like YAML: strings, numbers, true/false, null, mappings, lists")
    try:
        result = loader.yaml_constructors[tag](loader, yaml.ScalarNode(tag, value, style=event.style))
    except (ValueError, KeyError, TypeError, OverflowError):
        expected = {"int": "an integer", "float": "a number", "bool": "true or false"}[tag[len(_TAGS):]]
        raise _Bad(f"{_brief(value)} is not {expected}" + (" (at most 4300 digits)" if value.isdigit() else "")) from None
    if type(result) is float and not math.isfinite(result):
        raise _Bad(f"{_brief(value)} is not a finite number (JSON has no infinity or NaN)")
    return result


def _from_events(loader: yaml.SafeLoader, doc: YamlDoc) -> Any:
    """Build the document straight from parser events, recording lines as it goes.

    About twice as fast as composing a node tree first (what dominates loading a workflow of
    thousands of tasks). This is the only reader, so it enforces ork's JSON shape: keys are
    strings, scalars are JSON scalars, no recursive aliases, at most `MAX_ALIAS_VALUES`
    values through aliases and `MAX_DEPTH` levels of nesting. An alias shares the anchored
    object rather than copying it, so counting is what keeps expansion bounded downstream.
    """
    lines = doc.lines
    # anchor -> (value, how many values it stands for, aliases expanded; -1 while still open)
    anchors: dict[str, tuple[Any, int]] = {}
    # a frame: [container, path, key or _NO_KEY, seen-keys, merges, merging, line, anchor, total at start]
    stack: list[list[Any]] = []
    root: list[Any] = []
    documents = 0
    total = 0  # values the document stands for, aliases expanded
    aliased = 0  # of which through aliases

    def place(value: Any, line: int) -> None:
        if not stack:
            root.append(value)
            return
        frame = stack[-1]
        container, path = frame[0], frame[1]
        if isinstance(container, list):
            lines.setdefault(path + (len(container),), line)
            container.append(value)
            return
        key = frame[2]
        if key is _NO_KEY:
            if not isinstance(value, str):
                raise _Bad(f"a mapping key must be a string, not {_kind(value)}", line, path)
            seen = frame[3]
            if value in seen and not frame[5]:
                doc.problems.append(
                    Problem(doc.file, dotted(path + (value,)), f"duplicate key (first defined on line {seen[value]})", line)
                )
            seen[value] = line
            lines[path + (value,)] = line
            frame[2] = value
            return
        frame[2] = _NO_KEY
        if frame[5]:  # the value of '<<'
            frame[5] = False
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merged):
                raise _Bad(f"'<<' merges a mapping or a list of mappings, not {_kind(value)}", line, path)
            frame[4].extend(merged)
            return
        container[key] = value

    def child_path() -> PathT:
        if not stack:
            return ()
        frame = stack[-1]
        base: PathT = frame[1]
        if isinstance(frame[0], list):
            return base + (len(frame[0]),)
        return base + (frame[2],)

    event: Any = None
    try:
        while loader.check_event():
            event = loader.get_event()  # type: ignore[no-untyped-call]
            kind = type(event)
            if kind is yaml.ScalarEvent:
                total += 1
                line = event.start_mark.line + 1
                awaiting_key = bool(stack) and not isinstance(stack[-1][0], list) and stack[-1][2] is _NO_KEY
                if awaiting_key and event.value == "<<" and event.implicit[0] and event.tag is None:
                    stack[-1][5] = True
                    stack[-1][2] = "<<"
                    continue
                value = _scalar(loader, event)
                if awaiting_key:
                    if type(value) is not str:
                        raise _Bad(
                            f"mapping key {_brief(event.value)} is {'null' if value is None else _kind(value)};"
                            f" keys must be strings (quote it: '{_brief(event.value)}')"
                        )
                else:
                    lines.setdefault(child_path(), line)
                if event.anchor:
                    anchors[event.anchor] = (value, 1)
                place(value, line)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                is_map = kind is yaml.MappingStartEvent
                if event.tag not in (_MAPPING_TAGS if is_map else _SEQUENCE_TAGS):
                    raise _Bad(f"unsupported tag {_short(event.tag)} on a {'mapping' if is_map else 'list'}")
                if stack and not isinstance(stack[-1][0], list) and stack[-1][2] is _NO_KEY:
                    raise _Bad(f"a mapping key must be a string, not {'a mapping' if is_map else 'a list'}")
                if len(stack) >= MAX_DEPTH:
                    raise _Bad(f"nested more than {MAX_DEPTH} levels deep", path=stack[2][1])
                path = child_path()
                lines.setdefault(path, event.start_mark.line + 1)
                container: Any = {} if is_map else []
                if event.anchor:
                    anchors[event.anchor] = (container, -1)
                stack.append([container, path, _NO_KEY, {}, [], False, event.start_mark.line + 1, event.anchor, total])
                total += 1
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = stack.pop()
                container = frame[0]
                for merged in frame[4]:
                    for k, v in merged.items():
                        container.setdefault(k, v)
                anchor = frame[7]
                if anchor and anchors[anchor][0] is container:
                    anchors[anchor] = (container, total - frame[8])
                place(container, frame[6])
            elif kind is yaml.AliasEvent:
                found = anchors.get(event.anchor)
                if found is None:
                    raise _Bad(f"alias *{event.anchor} refers to no anchor &{event.anchor} defined before it")
                if found[1] < 0:
                    raise _Bad(f"alias *{event.anchor} is inside the collection it refers to (a recursive alias)")
                total += found[1]
                aliased += found[1]
                if aliased > MAX_ALIAS_VALUES and aliased > total - aliased:
                    raise _Bad(
                        f"aliases repeat more than {MAX_ALIAS_VALUES:,} values (alias *{event.anchor} brings"
                        f" {found[1]:,}); write the data out or use fewer nested aliases"
                    )
                place(found[0], event.start_mark.line + 1)
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise yaml.composer.ComposerError(
                        "expected a single document in the stream", None, "but found another document", event.start_mark
                    )
    except _Bad as exc:
        if exc.line is None and event is not None:
            exc.line = event.start_mark.line + 1
        if exc.path is None:
            exc.path = () if not stack else (
                child_path() if isinstance(stack[-1][0], list) or stack[-1][2] is not _NO_KEY else stack[-1][1]
            )
        raise
    return root[0] if root else _EMPTY


_NO_KEY = object()
_EMPTY = object()


def read_text(path: Path, what: str = "YAML") -> str | Problem:
    """The file's text, or a `Problem` saying why ork will not read it.

    Only regular files up to `MAX_FILE_BYTES`: a FIFO, a directory or a device such as
    /dev/zero would block or never end. The type is checked before opening, and again on
    the opened descriptor (opened non-blocking, so a FIFO swapped in meanwhile cannot hang).
    """
    name = str(path)
    try:
        kind = _file_kind(os.stat(path).st_mode)
        if kind is None:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                info = os.fstat(fd)
                kind = _file_kind(info.st_mode)
                if kind is None and info.st_size <= MAX_FILE_BYTES:
                    with os.fdopen(fd, "rb", closefd=False) as stream:
                        data = stream.read(MAX_FILE_BYTES + 1)
                else:
                    data = b""
            finally:
                os.close(fd)
    except FileNotFoundError:
        return Problem(name, "", "file not found")
    except OSError as exc:
        return Problem(name, "", f"cannot read: {exc.strerror or exc}")
    if kind is not None:
        return Problem(name, "", f"is {kind}, not a regular file; expected a {what} file")
    if len(data) > MAX_FILE_BYTES or info.st_size > MAX_FILE_BYTES:
        return Problem(name, "", f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the most ork reads as a {what} file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return Problem(name, "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot start or continue a character", line)


def _file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is, in words."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def load_yaml(path: Path, *, text: str | None = None, what: str = "a mapping", allow_empty: bool = False) -> YamlDoc:
    """Parse a YAML file; a syntax error, an empty file or a refused one becomes a `Problem` with its line.

    `allow_empty`: a file with no document (blank, or only comments) gives ``data=None`` and
    no problem, for files whose absence of content means "the defaults" (ork.yaml).
    """
    name = str(path)
    if text is None:
        read = read_text(path)
        if isinstance(read, Problem):
            return YamlDoc(name, None, problems=[read])
        text = read
    loader = _Loader(text)
    try:
        doc = YamlDoc(name, None, text=text)
        data = _from_events(loader, doc)
        if data is _EMPTY:
            empty = [] if allow_empty else [Problem(name, "", f"the file is empty; expected {what}")]
            return YamlDoc(name, None, problems=empty, text=text)
        doc.data = data
    except _Bad as exc:
        return YamlDoc(name, None, problems=[Problem(name, dotted(exc.path or ()), exc.message, exc.line)], text=text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(m) for m in (exc.context, exc.problem) if m)
        return YamlDoc(name, None, problems=[Problem(name, "", f"invalid YAML: {message}", line)], text=text)
    except yaml.YAMLError as exc:
        return YamlDoc(name, None, problems=[Problem(name, "", f"invalid YAML: {exc}")], text=text)
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        doc.problems.append(Problem(name, "", f"expected {what}, found {_kind(data)}", doc.line(())))
    return doc


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


# pydantic's wording for a wrong type ("Input should be a valid integer") in YAML's terms.
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "list_type": "a list",
}


def _as_written(value: Any) -> str:
    """A value as YAML would write it, for 'got …': true, null, 2.5, the string '3'."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return f"the string {_brief(value)!r}"
    if isinstance(value, (int, float)):
        return _brief(repr(value))
    return _kind(value)


def suggest(name: str, valid: Iterable[str]) -> str:
    """'; did you mean X?' for a close valid name, else ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validation_problems(
    doc: YamlDoc,
    exc: ValidationError | Iterable[ErrorDetails],
    prefix: PathT = (),
    *,
    valid_keys: Mapping[PathT, Iterable[str]] | None = None,
    show_input: bool = True,
) -> list[Problem]:
    """Turn a pydantic error into one `Problem` per field, located in the YAML file.

    `show_input=False` keeps values out of messages (they may come from ``${SECRET}``). `exc`
    may also be a selection of its errors, for a caller that can judge only some of them.
    """
    problems: list[Problem] = []
    errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else exc
    for err in errors:
        loc = prefix + tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            options = (valid_keys or {}).get(loc[:-1], ())
            message = f"unknown key {key!r}{suggest(key, options)}"
            if options:
                message += f"; valid keys: {', '.join(sorted(options))}"
        elif kind == "missing":
            message = "required field is missing"
        elif kind in _EXPECTED:
            value = err.get("input")
            message = f"expected {_EXPECTED[kind]}, got {_as_written(value) if show_input else _kind(value)}"
        else:
            # a validator's own words, without pydantic's "Value error, " in front of them
            message = err["msg"].removeprefix("Value error, ") if kind == "value_error" else err["msg"]
            if show_input and kind not in ("model_type", "dict_type") and not isinstance(err.get("input"), (dict, list)):
                message += f" (got {err.get('input')!r})"
        problems.append(doc.problem(loc, message))
    return problems

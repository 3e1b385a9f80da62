"""YAML with line numbers, so every error can point at the line a person has to fix.

PyYAML's constructed dicts forget where keys came from; we compose the node tree and walk
it beside the data to keep a ``path -> line`` map. Duplicate keys, which PyYAML silently
accepts (last one wins), are reported here because they almost always hide a mistake.
"""

from __future__ import annotations

import difflib
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


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def _build(node: yaml.Node, path: PathT, doc: YamlDoc, loader: yaml.SafeLoader) -> Any:
    """Construct the value of `node` while recording the line of every path under it.

    Plain strings, mappings and lists are built here (most of a workflow); other scalars
    (ints, bools, dates …) and merge keys go through PyYAML's own constructor.
    """
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.tag == _STR else loader.construct_object(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (index,), doc, loader) for index, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        if any(k.tag == _MERGE for k, _ in node.value):
            value = loader.construct_object(node, deep=True)
            _lines_only(node, path, doc)
            return value
        out: dict[Any, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if key_node.tag == _STR else loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            skey = str(key)
            if skey in seen:
                doc.problems.append(
                    Problem(doc.file, dotted(path + (skey,)), f"duplicate key (first defined on line {seen[skey]})", line)
                )
            seen[skey] = line
            doc.lines[path + (skey,)] = line
            out[key] = _build(value_node, path + (skey,), doc, loader)
        return out
    return loader.construct_object(node, deep=True)


def _lines_only(node: yaml.Node, path: PathT, doc: YamlDoc) -> None:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            doc.lines.setdefault(path + (key,), key_node.start_mark.line + 1)
            _lines_only(value_node, path + (key,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines_only(item, path + (index,), doc)


class _Unusual(Exception):
    """A document the event reader does not handle (complex keys, custom tags): use nodes."""


_TAG_CACHE: dict[str, str] = {}


def _scalar(loader: yaml.SafeLoader, event: yaml.ScalarEvent) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        if not event.implicit[0]:
            return event.value  # quoted: always a string
        value = event.value
        tag = _TAG_CACHE.get(value)
        if tag is None:
            tag = loader.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
            if len(_TAG_CACHE) < 4096:
                _TAG_CACHE[value] = tag
        if tag == _STR:
            return value
    construct = loader.yaml_constructors.get(tag)
    if construct is None or tag == _MERGE:
        raise _Unusual(tag)
    return construct(loader, yaml.ScalarNode(tag, event.value, style=event.style))


def _from_events(loader: yaml.SafeLoader, doc: YamlDoc) -> Any:
    """Build the document straight from parser events, recording lines as it goes.

    About twice as fast as composing a node tree first (what dominates loading a workflow of
    thousands of tasks). Anything unusual raises `_Unusual` and the node path takes over.
    """
    lines = doc.lines
    anchors: dict[str, Any] = {}
    # a frame: [container, path, key or _NO_KEY, seen-keys, merges]
    stack: list[list[Any]] = []
    root: list[Any] = []
    documents = 0

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
            if isinstance(value, (dict, list)):
                raise _Unusual("complex key")
            skey = str(value)
            seen = frame[3]
            if skey in seen and not frame[5]:
                doc.problems.append(
                    Problem(doc.file, dotted(path + (skey,)), f"duplicate key (first defined on line {seen[skey]})", line)
                )
            seen[skey] = line
            lines[path + (skey,)] = line
            frame[2] = value
            return
        frame[2] = _NO_KEY
        if frame[5]:  # the value of '<<'
            frame[5] = False
            frame[4].extend(value if isinstance(value, list) else [value])
            return
        container[key] = value

    def child_path() -> PathT:
        if not stack:
            return ()
        frame = stack[-1]
        base: PathT = frame[1]
        if isinstance(frame[0], list):
            return base + (len(frame[0]),)
        if frame[2] is _NO_KEY:
            raise _Unusual("complex key")
        return base + (str(frame[2]),)

    while loader.check_event():
        event = loader.get_event()  # type: ignore[no-untyped-call]
        kind = type(event)
        if kind is yaml.ScalarEvent:
            line = event.start_mark.line + 1
            if stack and not isinstance(stack[-1][0], list) and stack[-1][2] is _NO_KEY and event.value == "<<" \
                    and event.implicit[0] and event.tag is None:
                stack[-1][5] = True
                stack[-1][2] = "<<"
                continue
            value = _scalar(loader, event)
            if not stack or isinstance(stack[-1][0], list) or stack[-1][2] is not _NO_KEY:
                lines.setdefault(child_path(), line)
            if event.anchor:
                anchors[event.anchor] = value
            place(value, line)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if event.tag not in (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
                raise _Unusual(event.tag)
            path = child_path()
            lines.setdefault(path, event.start_mark.line + 1)
            container: Any = {} if kind is yaml.MappingStartEvent else []
            if event.anchor:
                anchors[event.anchor] = container
            stack.append([container, path, _NO_KEY, {}, [], False, event.start_mark.line + 1])
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            container = frame[0]
            for merged in frame[4]:
                if not isinstance(merged, dict):
                    raise _Unusual("merge of a non-mapping")
                for k, v in merged.items():
                    container.setdefault(k, v)
            place(container, frame[6])
        elif kind is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise _Unusual("unknown alias")
            place(anchors[event.anchor], event.start_mark.line + 1)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise yaml.composer.ComposerError(
                    "expected a single document in the stream", None, "but found another document", event.start_mark
                )
    return root[0] if root else _EMPTY


_NO_KEY = object()
_EMPTY = object()


def load_yaml(path: Path, *, text: str | None = None, what: str = "a mapping") -> YamlDoc:
    """Parse a YAML file; a syntax error or an empty file becomes a `Problem` with its line."""
    name = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return YamlDoc(name, None, problems=[Problem(name, "", "file not found")])
        except UnicodeDecodeError as exc:
            return YamlDoc(name, None, problems=[Problem(name, "", f"not UTF-8 text: {exc}")])
        except OSError as exc:
            return YamlDoc(name, None, problems=[Problem(name, "", f"cannot read: {exc.strerror}")])
    loader = _Loader(text)
    try:
        doc = YamlDoc(name, None)
        try:
            data = _from_events(loader, doc)
        except _Unusual:
            loader.dispose()
            loader = _Loader(text)
            doc = YamlDoc(name, None)
            node = loader.get_single_node()
            data = _EMPTY if node is None else _build(node, (), doc, loader)
        if data is _EMPTY:
            return YamlDoc(name, None, problems=[Problem(name, "", f"the file is empty; expected {what}")])
        doc.data = data
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(m) for m in (exc.context, exc.problem) if m)
        return YamlDoc(name, None, problems=[Problem(name, "", f"invalid YAML: {message}", line)])
    except yaml.YAMLError as exc:
        return YamlDoc(name, None, problems=[Problem(name, "", f"invalid YAML: {exc}")])
    except TypeError as exc:  # e.g. a list used as a mapping key
        return YamlDoc(name, None, problems=[Problem(name, "", f"invalid YAML: mapping keys must be plain values ({exc})")])
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
        else:
            message = err["msg"]
            if show_input and kind not in ("model_type", "dict_type") and not isinstance(err.get("input"), (dict, list)):
                message += f" (got {err.get('input')!r})"
        problems.append(doc.problem(loc, message))
    return problems

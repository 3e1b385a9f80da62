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
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(name, None, problems=[Problem(name, "", f"the file is empty; expected {what}")])
        doc = YamlDoc(name, None)
        doc.data = data = _build(node, (), doc, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(m) for m in (exc.context, exc.problem) if m)
        return YamlDoc(name, None, problems=[Problem(name, "", f"invalid YAML: {message}", line)])
    except yaml.YAMLError as exc:
        return YamlDoc(name, None, problems=[Problem(name, "", f"invalid YAML: {exc}")])
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
    exc: ValidationError,
    prefix: PathT = (),
    *,
    valid_keys: Mapping[PathT, Iterable[str]] | None = None,
    show_input: bool = True,
) -> list[Problem]:
    """Turn a pydantic error into one `Problem` per field, located in the YAML file.

    `show_input=False` keeps values out of messages (they may come from ``${SECRET}``).
    """
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
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

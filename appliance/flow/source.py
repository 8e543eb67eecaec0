"""Reading flow YAML with line numbers: typed fields of a mapping, problems as `file:line: ...` lines."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TARGET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")  # queue and transfer names: never a number


def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class SourceFile:
    """The problems and references found in one flow file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.found: list[tuple[int, str]] = []  # (line, message), sorted by line in ``problems``
        self.targets: list[tuple[int, str, str, str]] = []  # line, node id, what, target
        self.prompts: list[tuple[int, str | None, str]] = []  # line, node id, prompt id
        self.constructor = SafeConstructor()

    def err(self, line: int, node_id: str | None, problem: str, fix: str) -> None:
        where = f"node '{node_id}': " if node_id else ""  # None or "": a top-level problem
        self.found.append((line, f"{self.path}:{line}: {where}{problem}; {fix}"))

    @property
    def problems(self) -> list[str]:
        """The messages in file order, so a technician can fix them top to bottom."""
        return [message for _, message in sorted(self.found, key=lambda item: item[0])]

    def items(
        self, node: yaml.Node, node_id: str | None, what: str
    ) -> dict[str, tuple[int, yaml.Node]] | None:
        """A mapping's entries by key, with the key's line; None (and a problem) if not a mapping."""
        if not isinstance(node, yaml.MappingNode):
            self.err(
                line_of(node),
                node_id,
                f"{what} must be a mapping (key: value lines)",
                "indent its keys under it",
            )
            return None
        try:
            self.constructor.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
        except yaml.YAMLError as exc:
            self.err(line_of(node), node_id, f"bad merge key: {exc}", "merge only mappings")
        out: dict[str, tuple[int, yaml.Node]] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else ""
            if name in out:
                self.err(
                    line_of(key),
                    node_id,
                    f"key '{name}' appears twice (first on line {out[name][0]})",
                    "keep one of them",
                )
            out[name] = (line_of(key), value)
        return out

    def value(self, node: yaml.Node, node_id: str | None) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            self.err(line_of(node), node_id, f"cannot read value: {exc}", "fix the value's syntax")
            return None


class Fields:
    """Typed reading of one node's keys; problems are recorded, defaults returned so checking goes on."""

    def __init__(self, f: SourceFile, node_id: str | None, items: dict[str, tuple[int, yaml.Node]]) -> None:
        self.f, self.items = f, items
        self.id: str = node_id or ""  # "" = the flow's top level (the message names no node)

    def line(self, key: str) -> int:
        return self.items[key][0]

    def raw(self, key: str) -> Any:
        return self.f.value(self.items[key][1], self.id) if key in self.items else None

    def text(self, key: str, default: str | None = None) -> str | None:
        if key not in self.items:
            return default
        node = self.items[key][1]
        if not isinstance(node, yaml.ScalarNode) or node.value == "" or node.tag.endswith(":null"):
            self.f.err(
                self.line(key), self.id, f"{key} must be a single word or text", f"write {key}: <value>"
            )
            return default
        return str(node.value)

    def target(self, key: str, what: str | None = None) -> str | None:
        value = self.text(key)
        if value is not None:
            self.f.targets.append((self.line(key), self.id, what or key, value))
        return value

    def name(self, key: str, pattern: re.Pattern[str], fix: str) -> str | None:
        value = self.text(key)
        if value is not None and not pattern.match(value):
            self.f.err(self.line(key), self.id, f"{key} '{value}' is not a valid name", fix)
        return value

    def prompts(self, key: str) -> tuple[str, ...]:
        if key not in self.items:
            return ()
        line, node = self.items[key]
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out = []
        for item in nodes:
            if not isinstance(item, yaml.ScalarNode) or not str(item.value).strip():
                self.f.err(
                    line_of(item), self.id, f"{key} must be prompt ids", f"write {key}: [greeting, main_menu]"
                )
                continue
            out.append(str(item.value))
            self.f.prompts.append((line_of(item), self.id, str(item.value)))
        if not out:
            self.f.err(line, self.id, f"{key} is empty", f"list at least one prompt id in {key}")
        return tuple(out)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if key in self.items and not isinstance(value, bool):
            self.f.err(
                self.line(key), self.id, f"{key} must be true or false, got {value!r}", f"write {key}: true"
            )
            return default
        return default if value is None else value

    def number(self, key: str, integer: bool = False, minimum: float = 0) -> Any:
        value = self.raw(key)
        if key not in self.items:
            return None
        kinds = (int,) if integer else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or value < minimum
            or (not integer and value <= 0)
        ):
            kind = "a whole number" if integer else "a number of seconds above 0"
            self.f.err(
                self.line(key), self.id, f"{key} must be {kind}, got {value!r}", f"write e.g. {key}: 3"
            )
            return None
        return value if integer else float(value)

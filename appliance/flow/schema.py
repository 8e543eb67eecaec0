"""The schema of each node type: read one node's YAML into a model node, recording every problem."""

from __future__ import annotations

import re
from typing import Any

import yaml

from appliance.flow import conditions
from appliance.flow.checks import ASK_CHECKS
from appliance.flow.model import (
    NODE_TYPES,
    AskNode,
    BranchNode,
    CallbackNode,
    Case,
    GotoNode,
    HangupNode,
    MenuNode,
    MenuOption,
    Node,
    QueueNode,
    SayNode,
    SetNode,
    SubflowNode,
    TransferNode,
)
from appliance.flow.source import TARGET_NAME, VAR_NAME, Fields, SourceFile, line_of, suggest

_DTMF_KEYS = set("0123456789*#")
_MENU_TAIL = (
    "interruptible",
    "timeout",
    "retries",
    "invalid",
    "no_input",
    "invalid_prompt",
    "no_input_prompt",
)

# type -> (required keys, optional keys); "type" and "label" are allowed everywhere.
_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "say": (("prompts", "next"), ("interruptible",)),
    "menu": (("prompts", "options"), _MENU_TAIL),
    "ask": (
        ("prompts", "var", "next"),
        ("input", "min_length", "max_length", "terminator", "pattern", "check", "confirm", "interdigit_timeout",
         *_MENU_TAIL),
    ),
    "branch": (("cases", "default"), ()),
    "queue": (("queue",), ("prompts",)),
    "transfer": (("target",), ("prompts", "timeout", "no_answer")),
    "request_callback": (("reason", "next"), ("prompts", "number_var", "no_number")),
    "set": (("vars", "next"), ()),
    "goto": (("target",), ()),
    "subflow": (("flow",), ()),
    "hangup": ((), ("goodbye", "outcome")),
}
_HINTS = {
    "prompts": "prompts: [<prompt id>, ...]",
    "next": "next: <node id>",
    "options": 'options: {"1": <node id>, ...}',
    "var": "var: <variable name>",
    "cases": "cases: [{when: {...}, goto: <node id>}]",
    "default": "default: <node id>",
    "queue": "queue: reception",
    "target": "target: <name>",
    "reason": "reason: after_hours",
    "vars": "vars: {<name>: <value>}",
    "flow": "flow: <flow file name without .yaml>",
}


def parse_node(f: SourceFile, node_id: str, line: int, body: yaml.Node) -> Node | None:
    """One entry of `nodes:` as a model node (None if its type is unusable); problems go to ``f``."""
    items = f.items(body, node_id, "a node")
    if items is None:
        return None
    fields = Fields(f, node_id, items)
    kind = fields.text("type")
    if kind is None:
        f.err(line, node_id, "has no type", "add type: one of " + ", ".join(sorted(NODE_TYPES)))
        return None
    if kind not in NODE_TYPES:
        hint = suggest(kind, NODE_TYPES)
        f.err(
            fields.line("type"),
            node_id,
            f"unknown node type '{kind}'",
            (hint + " " if hint else "") + "allowed types: " + ", ".join(sorted(NODE_TYPES)),
        )
        return None
    required, optional = _KEYS[kind]
    allowed = {"type", "label", *required, *optional}
    for key, (key_line, _) in items.items():
        if key not in allowed:
            hint = suggest(key, allowed)
            f.err(
                key_line,
                node_id,
                f"unknown key '{key}' for a {kind} node",
                (hint + " " if hint else "") + "allowed keys: " + ", ".join(sorted(allowed)),
            )
    for key in required:
        if key not in items:
            f.err(
                line,
                node_id,
                f"missing key '{key}' for a {kind} node",
                f"add {_HINTS.get(key, key + ': ...')}",
            )
    base = {"id": node_id, "line": line, "label": fields.text("label") or ""}
    return _BUILDERS[kind](f, fields, base)


def _build_say(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    return SayNode(
        **base,
        prompts=x.prompts("prompts"),
        next=x.target("next") or "",
        interruptible=x.boolean("interruptible", True),
    )


def _menu_tail(x: Fields) -> dict[str, Any]:
    out = {
        "interruptible": x.boolean("interruptible", True),
        "timeout": x.number("timeout"),
        "retries": x.number("retries", integer=True),
        "invalid": x.target("invalid"),
        "no_input": x.target("no_input", "no_input"),
        "invalid_prompt": x.text("invalid_prompt"),
        "no_input_prompt": x.text("no_input_prompt"),
    }
    for key in ("invalid_prompt", "no_input_prompt"):
        if out[key]:
            x.f.prompts.append((x.line(key), x.id, out[key]))
    return out


def _build_menu(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    options: list[MenuOption] = []
    if "options" in x.items:
        entries = f.items(x.items["options"][1], x.id, "options") or {}
        for key, (line, value) in entries.items():
            if key not in _DTMF_KEYS:
                f.err(line, x.id, f"option '{key}' is not a phone key", 'use 0-9, "*" or "#" (quote * and #)')
                continue
            options.append(_parse_option(f, x.id, key, line, value))
        if not entries:
            f.err(x.line("options"), x.id, "menu has no options", 'add options: {"1": <node id>}')
    tail = _menu_tail(x)
    if tail["no_input"] == x.id:
        f.err(
            x.line("no_input"),
            x.id,
            "no_input goes back to the menu itself, so a silent caller is never let go",
            "point it to a hangup node or remove it to use the default silent path",
        )
    return MenuNode(**base, prompts=x.prompts("prompts"), options=tuple(options), **tail)


def _parse_option(f: SourceFile, node_id: str, key: str, line: int, value: yaml.Node) -> MenuOption:
    what = f"option '{key}'"
    if isinstance(value, yaml.ScalarNode):
        f.targets.append((line, node_id, what, str(value.value)))
        return MenuOption(key=key, target=str(value.value), line=line)
    items = f.items(value, node_id, what) or {}
    x = Fields(f, node_id, items)
    for extra in set(items) - {"goto", "keywords", "label"}:
        f.err(
            items[extra][0],
            node_id,
            f"unknown key '{extra}' in {what}",
            "allowed keys: goto, keywords, label",
        )
    if "goto" not in items:
        f.err(line, node_id, f"{what} has no goto", "add goto: <node id>")
    words = x.raw("keywords") or []
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        f.err(
            x.line("keywords"),
            node_id,
            f"{what}: keywords must be a list of words or phrases",
            "write keywords: [запись, записаться]",
        )
        words = []
    return MenuOption(
        key=key,
        target=x.target("goto", what) or "",
        keywords=tuple(words),
        label=x.text("label") or "",
        line=line,
    )


def _build_ask(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    check = x.text("check")
    if check is not None and check not in ASK_CHECKS:
        f.err(x.line("check"), x.id, f"check '{check}' is not known",
              f"use one of: {', '.join(ASK_CHECKS)} (a date is typed as DDMMYYYY)")
        check = None
    # A date is typed as 8 digits (DDMMYYYY): that is the default length once a check asks for one.
    min_len = x.number("min_length", integer=True, minimum=1) or (8 if check else 1)
    max_len = x.number("max_length", integer=True, minimum=1) or (8 if check else 20)
    if max_len < min_len:
        f.err(base["line"], x.id, f"max_length {max_len} is below min_length {min_len}", "swap or fix them")
    terminator = x.raw("terminator") if "terminator" in x.items else "#"
    if terminator not in ("#", "*", "", None):
        f.err(x.line("terminator"), x.id, f"terminator {terminator!r} is not allowed", 'use "#", "*" or ""')
        terminator = "#"
    pattern = x.text("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            f.err(
                x.line("pattern"),
                x.id,
                f"pattern is not a valid regular expression ({exc})",
                r'quote it, e.g. pattern: "[78]?\d{10}"',
            )
    confirm = x.prompts("confirm")
    var = x.name("var", VAR_NAME, "use letters, digits and _ (e.g. callback_number)") or ""
    kind = x.text("input") or "digits"
    if kind not in ("digits", "speech"):
        f.err(x.line("input"), x.id, f"input '{kind}' is not allowed", "use digits (keys or spoken numbers) or "
              "speech (free words, kept as text and audio)")
        kind = "digits"
    return AskNode(
        **base,
        prompts=x.prompts("prompts"),
        var=var,
        next=x.target("next") or "",
        min_length=min_len,
        max_length=max_len,
        terminator=terminator or "",
        pattern=pattern,
        check=check,
        confirm=confirm,
        input=kind,
        interdigit_timeout=x.number("interdigit_timeout"),
        **_menu_tail(x),
    )


def _build_branch(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    cases: list[Case] = []
    node = x.items.get("cases", (0, None))[1]
    if node is not None and not isinstance(node, yaml.SequenceNode):
        f.err(
            x.line("cases"),
            x.id,
            "cases must be a list",
            "write each case as '- when: {...}' / 'goto: <node>'",
        )
    for item in node.value if isinstance(node, yaml.SequenceNode) else []:
        entries = f.items(item, x.id, "a case")
        if entries is None:
            continue
        c = Fields(f, x.id, entries)
        for extra in set(entries) - {"when", "goto", "label"}:
            f.err(
                entries[extra][0], x.id, f"unknown key '{extra}' in a case", "allowed keys: when, goto, label"
            )
        if "when" not in entries or "goto" not in entries:
            f.err(
                line_of(item),
                x.id,
                "a case needs both when and goto",
                "write '- when: {...}' and 'goto: <node>'",
            )
        when = _parse_when(f, x.id, entries["when"][1]) if "when" in entries else conditions.When()
        cases.append(
            Case(
                when=when,
                target=c.target("goto", "case") or "",
                label=c.text("label") or "",
                line=line_of(item),
            )
        )
    return BranchNode(**base, cases=tuple(cases), default=x.target("default") or "")


def _parse_when(f: SourceFile, node_id: str, node: yaml.Node) -> conditions.When:
    entries = f.items(node, node_id, "when")
    if entries is None:
        return conditions.When()
    if not entries:
        f.err(line_of(node), node_id, "when has no conditions", "add conditions or use the branch's default")
    values: dict[str, Any] = {}
    text = []
    for key, (line, value_node) in entries.items():
        before = len(f.found)
        value = f.value(value_node, node_id)
        if len(f.found) > before:  # unreadable (e.g. 2026-13-01): already reported
            continue
        try:
            values[key] = conditions.parse_condition(key, value)
        except conditions.ConditionError as exc:
            hint = suggest(key, conditions.CONDITION_KEYS) if key not in conditions.CONDITION_KEYS else ""
            f.err(line, node_id, exc.problem, hint or exc.fix)
            continue
        text.append(f"{key} {_short(value)}")
    return conditions.When(**values, text="; ".join(text))


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _build_queue(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    queue = x.name("queue", TARGET_NAME, "use the queue's name from the settings, e.g. reception") or ""
    return QueueNode(**base, queue=queue, prompts=x.prompts("prompts"))


def _build_transfer(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    target = x.text("target") or ""
    if target and not TARGET_NAME.match(target):
        f.err(
            x.line("target"),
            x.id,
            f"transfer target '{target}' is a number or address, not a name",
            "transfers go only to named targets defined in the box settings (toll-fraud guard); "
            "use a name such as 'head_doctor'",
        )
    return TransferNode(**base, target=target, prompts=x.prompts("prompts"), timeout=x.number("timeout"),
                        no_answer=x.target("no_answer"))


def _build_callback(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    number_var = None
    if "number_var" in x.items:
        number_var = x.name("number_var", VAR_NAME, "use the var of an ask node")
    return CallbackNode(
        **base,
        reason=x.text("reason") or "",
        next=x.target("next") or "",
        number_var=number_var,
        no_number=x.target("no_number"),
        prompts=x.prompts("prompts"),
    )


def _build_set(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    values = x.raw("vars")
    pairs: list[tuple[str, str]] = []
    if "vars" in x.items:
        if not isinstance(values, dict) or not values:
            f.err(
                x.line("vars"),
                x.id,
                "vars must be a mapping of names to values",
                "write vars: {topic: tests}",
            )
        else:
            for name, value in values.items():
                if not isinstance(name, str) or not VAR_NAME.match(name):
                    f.err(x.line("vars"), x.id, f"bad variable name {name!r}", "use letters, digits and _")
                pairs.append((str(name), "" if value is None else _short(value)))
    return SetNode(**base, values=tuple(pairs), next=x.target("next") or "")


def _build_goto(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    return GotoNode(**base, target=x.target("target") or "")


def _build_subflow(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    return SubflowNode(**base, flow=x.text("flow") or "")


def _build_hangup(f: SourceFile, x: Fields, base: dict[str, Any]) -> Node:
    outcome = x.name("outcome", VAR_NAME, "use a word like completed") or "completed"
    return HangupNode(**base, goodbye=x.prompts("goodbye"), outcome=outcome)


_BUILDERS = {
    "say": _build_say,
    "menu": _build_menu,
    "ask": _build_ask,
    "branch": _build_branch,
    "queue": _build_queue,
    "transfer": _build_transfer,
    "request_callback": _build_callback,
    "set": _build_set,
    "goto": _build_goto,
    "subflow": _build_subflow,
    "hangup": _build_hangup,
}

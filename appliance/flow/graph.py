"""Diagram of a flow (Mermaid or Graphviz DOT) that a technician can paste into a chat or render."""

from __future__ import annotations

import re

from appliance.flow.model import (
    AskNode,
    CallbackNode,
    Flow,
    HangupNode,
    MenuNode,
    Node,
    QueueNode,
    SubflowNode,
    TransferNode,
)

# Mermaid shapes per node type: (open, close)
_MERMAID_SHAPES = {
    "say": ("[", "]"),
    "menu": ("{{", "}}"),
    "ask": ("[/", "/]"),
    "branch": ("{", "}"),
    "queue": ("[[", "]]"),
    "transfer": ("[[", "]]"),
    "request_callback": ("[(", ")]"),
    "hangup": ("([", "])"),
}
_DOT_SHAPES = {
    "menu": "hexagon",
    "branch": "diamond",
    "hangup": "oval",
    "queue": "box3d",
    "transfer": "box3d",
    "ask": "parallelogram",
    "request_callback": "cylinder",
}
_SILENT = "_silent"  # pseudo nodes for the built-in ways out of menus and asks
_INVALID = "_invalid_end"


def _describe(node: Node) -> str:
    """Second line of a node's box: what it does, in a few words."""
    if isinstance(node, QueueNode):
        return f"queue: {node.queue}"
    if isinstance(node, TransferNode):
        return f"transfer: {node.target}"
    if isinstance(node, SubflowNode):
        return f"subflow: {node.flow}"
    if isinstance(node, CallbackNode):
        return f"callback: {node.reason}"
    if isinstance(node, HangupNode):
        return f"hangup: {node.outcome}"
    if isinstance(node, AskNode):
        return f"ask: {node.var}"
    prompts = getattr(node, "prompts", ())
    return f"{node.type}: {', '.join(prompts)}" if prompts else node.type


def _edges(flow: Flow) -> list[tuple[str, str, str]]:
    """(source id, label, target id) including the built-in silent/invalid exits and subflows."""
    out = []
    for node in flow.nodes.values():
        out.extend((node.id, label, target) for label, target in node.edges())
        if isinstance(node, MenuNode | AskNode):
            if not node.no_input:
                out.append((node.id, "no input", _SILENT))
            if not node.invalid:
                out.append((node.id, "invalid", _INVALID))
        if isinstance(node, SubflowNode):
            out.append((node.id, "", f"flow:{node.flow}"))
    return out


def _pseudo_label(target: str) -> str:
    if target == _SILENT:
        return "silent: silence_goodbye, hang up"
    if target == _INVALID:
        return "invalid: goodbye, hang up"
    return "flow " + target.removeprefix("flow:")


def _mermaid_id(node_id: str) -> str:
    # Prefix and sanitise: words like "end" or dashes break Mermaid node ids.
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", node_id)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid(flow: Flow) -> str:
    lines = ["flowchart TD"]
    for node in flow.nodes.values():
        first, last = _MERMAID_SHAPES.get(node.type, ("[", "]"))
        title = f"{node.id}: {node.label}" if node.label else node.id
        text = _mermaid_text(f"{title}<br/>{_describe(node)}")
        lines.append(f'    {_mermaid_id(node.id)}{first}"{text}"{last}')
    edges = _edges(flow)
    for target in sorted({t for _, _, t in edges if t not in flow.nodes}):
        lines.append(f'    {_mermaid_id(target)}(["{_mermaid_text(_pseudo_label(target))}"])')
    for source, label, target in edges:
        arrow = f'-->|"{_mermaid_text(label)}"|' if label else "-->"
        lines.append(f"    {_mermaid_id(source)} {arrow} {_mermaid_id(target)}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot(flow: Flow) -> str:
    lines = [f'digraph "{_dot_text(flow.name)}" {{', "    node [shape=box, fontname=sans];"]
    for node in flow.nodes.values():
        title = f"{node.id}: {node.label}" if node.label else node.id
        shape = _DOT_SHAPES.get(node.type, "box")
        lines.append(
            f'    "{_dot_text(node.id)}" [label="{_dot_text(title)}\\n{_dot_text(_describe(node))}", '
            f"shape={shape}];"
        )
    edges = _edges(flow)
    for target in sorted({t for _, _, t in edges if t not in flow.nodes}):
        lines.append(f'    "{_dot_text(target)}" [label="{_dot_text(_pseudo_label(target))}", shape=oval];')
    for source, label, target in edges:
        attrs = f' [label="{_dot_text(label)}"]' if label else ""
        lines.append(f'    "{_dot_text(source)}" -> "{_dot_text(target)}"{attrs};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph(flow: Flow, fmt: str = "mermaid") -> str:
    """The flow as a Mermaid flowchart (``fmt="mermaid"``) or a Graphviz digraph (``fmt="dot"``)."""
    if fmt == "mermaid":
        return _mermaid(flow)
    if fmt == "dot":
        return _dot(flow)
    raise ValueError(f"unknown graph format {fmt!r}; use 'mermaid' or 'dot'")

"""Load and check flow files: YAML with line numbers, a schema per node type, graph and prompt checks.

Every problem is one line ``<file>:<line>: node '<id>': <problem>; <fix>`` so that a technician (or an
editor) can jump to it; all problems of a file are reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import holidays
import yaml

from appliance.errors import FlowError
from appliance.flow.graph import graph
from appliance.flow.model import DIGITS_PLACEHOLDER, TEXT_PREFIX, Flow, Node, SubflowNode, TransferNode
from appliance.flow.schema import parse_node
from appliance.flow.source import NODE_ID, Fields, SourceFile, suggest

__all__ = ["check_dir", "graph", "load_flow", "load_flows", "validate_dir"]

Prompts = Mapping[str, set[str]] | Mapping[str, Any]  # language -> prompt ids (any container of ids)
# What the box settings may preset for every flow (silence.no_input_timeout, silence.retries,
# sip.dtmf.interdigit_timeout); a flow file's own top-level value wins.
DEFAULTABLE = ("no_input_timeout", "interdigit_timeout", "retries")

_TOP_REQUIRED = ("language", "start", "nodes")
_TOP_OPTIONAL = (
    "description",
    "country",
    "no_input_timeout",
    "interdigit_timeout",
    "retries",
    "silence_goodbye",
    "invalid_prompt",
    "no_input_prompt",
    "goodbye",
    "transfer_failed",
    "transfer_timeout",
)


# ------------------------------------------------------------------------------------------- whole files


def _check_file(
    path: Path, prompts: Prompts | None, defaults: Mapping[str, Any] | None = None
) -> tuple[Flow | None, list[str]]:
    """Parse and check one file; returns the flow (None if it could not be built) and the problems."""
    f = SourceFile(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except OSError as exc:
        return None, [f"{path}: cannot read the file ({exc.strerror}); check the path and permissions"]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        f.err(
            line,
            None,
            f"YAML syntax error: {exc.problem or exc.context}",
            'check indentation, colons and quotes on this line or the line before (quote "*" and "#")',
        )
        return None, f.problems
    except yaml.YAMLError as exc:
        return None, [f"{path}: YAML error: {exc}; fix the file's syntax"]
    if root is None:
        return None, [
            f"{path}:1: the file is empty; write language, start and nodes (see the flow language docs)"
        ]
    top = f.items(root, None, "a flow file")
    if top is None:
        return None, f.problems
    t = Fields(f, None, top)
    for key, (line, _) in top.items():
        if key not in (*_TOP_REQUIRED, *_TOP_OPTIONAL):
            hint = suggest(key, (*_TOP_REQUIRED, *_TOP_OPTIONAL))
            f.err(
                line,
                None,
                f"unknown top-level key '{key}'",
                (hint + " " if hint else "") + "allowed: " + ", ".join((*_TOP_REQUIRED, *_TOP_OPTIONAL)),
            )
    for key in _TOP_REQUIRED:
        if key not in top:
            f.err(1, None, f"missing top-level key '{key}'", f"add {key}: ... at the top of the file")
    settings: dict[str, Any] = {k: v for k, v in (defaults or {}).items() if k in DEFAULTABLE and v is not None}
    for key in ("no_input_timeout", "interdigit_timeout", "transfer_timeout"):
        if (value := t.number(key)) is not None:
            settings[key] = float(value)
    if (value := t.number("retries", integer=True)) is not None:
        settings["retries"] = value
    for key in ("silence_goodbye", "invalid_prompt", "no_input_prompt", "goodbye", "transfer_failed", "description",
                "country"):
        if (value := t.text(key)) is not None:
            settings[key] = value
    if settings.get("country", "RU") not in holidays.list_supported_countries():
        f.err(
            t.line("country"), None, f"unknown holiday country '{settings['country']}'", "use a code like RU"
        )
    nodes: dict[str, Node] = {}
    body = top.get("nodes", (1, None))[1]
    entries = f.items(body, None, "nodes") if body is not None else {}
    for node_id, (line, node_body) in (entries or {}).items():
        if not NODE_ID.match(node_id):
            f.err(
                line,
                node_id,
                "node id must start with a letter and use letters, digits, _ or -",
                "rename it, e.g. main_menu",
            )
        node = parse_node(f, node_id, line, node_body)
        if node is not None:
            nodes[node_id] = node
    flow = Flow(
        name=path.stem,
        language=t.text("language") or "",
        path=str(path),
        start=t.text("start") or "",
        nodes=nodes,
        **settings,
    )
    _check_graph(f, flow, top, entries or {})
    _check_prompts(f, flow, top, prompts)
    return (flow if not f.problems else None), f.problems


def _check_graph(f: SourceFile, flow: Flow, top: dict[str, Any], entries: dict[str, Any]) -> None:
    for line, node_id, what, target in f.targets:
        if target not in entries:
            hint = suggest(target, entries)
            f.err(
                line,
                node_id,
                f"{what} goes to '{target}' which does not exist",
                hint or "add a node with that id or point to an existing one",
            )
    if not flow.start:
        return
    if flow.start not in entries:
        f.err(
            top["start"][0],
            None,
            f"start node '{flow.start}' does not exist",
            suggest(flow.start, entries) or "set start: to the first node's id",
        )
        return
    seen, todo = {flow.start}, [flow.start]
    while todo:
        node = flow.nodes.get(todo.pop())
        for _, target in node.edges() if node else ():
            if target in entries and target not in seen:
                seen.add(target)
                todo.append(target)
    for node_id, (line, _) in entries.items():
        if node_id not in seen:
            f.err(
                line,
                node_id,
                f"nothing leads here from start '{flow.start}' (unreachable)",
                "link to it from a menu option, next or goto, or delete it",
            )


def _check_prompts(f: SourceFile, flow: Flow, top: dict[str, Any], prompts: Prompts | None) -> None:
    if prompts is None or not flow.language:
        return
    catalog = prompts.get(flow.language)
    if catalog is None:
        f.err(
            top["language"][0],
            None,
            f"no prompt catalog for language '{flow.language}'",
            f"add voices/{flow.language}/prompts.yaml or use one of: " + ", ".join(sorted(prompts)),
        )
        return
    keys = ["silence_goodbye", "invalid_prompt", "no_input_prompt", "goodbye"]
    if any(isinstance(n, TransferNode) and not n.no_answer for n in flow.nodes.values()):
        keys.append("transfer_failed")  # said only when a transfer fails with nowhere else to go
    for key in keys:
        prompt = getattr(flow, key)
        if prompt not in catalog:
            line = top[key][0] if key in top else 1
            f.err(
                line,
                None,
                f"{key} prompt '{prompt}' is not in the '{flow.language}' prompt catalog",
                f"add it to voices/{flow.language}/prompts.yaml or set {key}: to an existing id",
            )
    for line, node_id, prompt in f.prompts:
        if prompt.startswith(TEXT_PREFIX) or prompt == DIGITS_PLACEHOLDER or prompt in catalog:
            continue
        hint = suggest(prompt, catalog)
        f.err(
            line,
            node_id,
            f"prompt '{prompt}' is not in the '{flow.language}' prompt catalog",
            hint or f"add it to voices/{flow.language}/prompts.yaml or fix the id",
        )


def _check_subflows(flows: dict[str, Flow], names: set[str]) -> list[str]:
    problems = []
    for flow in flows.values():
        for node in flow.nodes.values():
            if not isinstance(node, SubflowNode):
                continue
            where = f"{flow.path}:{node.line}: node '{node.id}': "
            other = flows.get(node.flow)
            if node.flow not in names:
                problems.append(
                    where
                    + f"subflow '{node.flow}' does not exist; "
                    + (suggest(node.flow, names) or "flows here: " + ", ".join(sorted(names)))
                )
            elif other is not None and other.language != flow.language:
                problems.append(
                    where + f"subflow '{node.flow}' speaks '{other.language}' but this flow "
                    f"speaks '{flow.language}'; use a subflow in the same language"
                )
    return problems


def load_flow(path: Path | str, prompts: Prompts | None = None, defaults: Mapping[str, Any] | None = None) -> Flow:
    """Load one flow file (subflow names are checked only by ``load_flows``); raise FlowError."""
    flow, problems = _check_file(Path(path), prompts, defaults)
    if problems or flow is None:
        raise FlowError("\n".join(problems))
    return flow


def _load_dir(
    directory: Path | str, prompts: Prompts | None, defaults: Mapping[str, Any] | None = None
) -> tuple[dict[str, Flow], list[str]]:
    directory = Path(directory)
    if not directory.is_dir():
        return {}, [f"{directory}: not a directory; pass the folder holding the *.yaml flow files"]
    files = sorted(directory.glob("*.yaml"))
    if not files:
        return {}, [f"{directory}: no *.yaml flow files; add one, e.g. clinic_ru.yaml"]
    flows: dict[str, Flow] = {}
    problems: list[str] = []
    for path in files:
        flow, found = _check_file(path, prompts, defaults)
        problems.extend(found)
        if flow is not None:
            flows[flow.name] = flow
    problems.extend(_check_subflows(flows, {p.stem for p in files}))
    return flows, problems


def load_flows(
    directory: Path | str, prompts: Prompts | None = None, defaults: Mapping[str, Any] | None = None
) -> dict[str, Flow]:
    """Load every ``*.yaml`` in ``directory`` (name = file stem); raise FlowError listing all problems.

    ``defaults`` (keys of DEFAULTABLE) replace the built-in defaults for files that do not set them."""
    flows, problems = _load_dir(directory, prompts, defaults)
    if problems:
        raise FlowError("\n".join(problems))
    return flows


def check_dir(directory: Path | str, prompts: Prompts | None = None) -> tuple[dict[str, Flow], list[str]]:
    """The flows of ``directory`` that load, and every problem, one line each (no exception)."""
    return _load_dir(directory, prompts)


def validate_dir(directory: Path | str, prompts: Prompts | None = None) -> list[str]:
    """Every problem in the flows of ``directory``, one line each; [] when all is well."""
    return check_dir(directory, prompts)[1]

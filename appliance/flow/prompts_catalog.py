"""Prompt catalogs: voices/<lang>/prompts.yaml maps a prompt id to its text, per language."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from appliance.errors import FlowError

CATALOG_FILE = "prompts.yaml"
_PROMPT_ID = re.compile(r"^[a-z][a-z0-9_]*$")


def _load_one(path: Path) -> dict[str, str]:
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except OSError as exc:
        raise FlowError(f"{path}: cannot read the prompt catalog ({exc.strerror}); check the file") from exc
    except yaml.MarkedYAMLError as exc:
        line = (
            (exc.problem_mark or exc.context_mark).line + 1 if (exc.problem_mark or exc.context_mark) else 1
        )
        raise FlowError(
            f"{path}:{line}: YAML syntax error: {exc.problem}; check quotes and indentation"
        ) from exc
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise FlowError(
            f"{path}:1: a prompt catalog maps prompt ids to texts; write lines like 'greeting: ...'"
        )
    problems, texts = [], {}
    for key, value in root.value:
        line = key.start_mark.line + 1
        pid = str(getattr(key, "value", ""))
        if not _PROMPT_ID.match(pid):
            problems.append(
                f"{path}:{line}: prompt id '{pid}' is not valid; use lowercase letters, digits and _"
            )
        elif not isinstance(value, yaml.ScalarNode) or not str(value.value).strip():
            problems.append(f"{path}:{line}: prompt '{pid}' has no text; write the text after the colon")
        elif pid in texts:
            problems.append(f"{path}:{line}: prompt '{pid}' appears twice; keep one")
        else:
            texts[pid] = " ".join(str(value.value).split())  # folded YAML lines -> one spoken line
    if problems:
        raise FlowError("\n".join(problems))
    return texts


def load_prompt_catalog(voices_dir: Path | str) -> dict[str, dict[str, str]]:
    """language -> prompt id -> text, from every ``<voices_dir>/<lang>/prompts.yaml``."""
    voices = Path(voices_dir)
    return {path.parent.name: _load_one(path) for path in sorted(voices.glob(f"*/{CATALOG_FILE}"))}


def prompt_ids(catalog: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """The ids per language, as the flow loader wants them."""
    return {lang: set(texts) for lang, texts in catalog.items()}

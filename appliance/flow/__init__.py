"""IVR flows: the YAML flow language (model, loader), the pure engine and the prompt catalogs."""

from appliance.flow.engine import INTERDIGIT, NO_INPUT, CallContext, CallState, start, step
from appliance.flow.graph import graph
from appliance.flow.loader import check_dir, load_flow, load_flows, validate_dir
from appliance.flow.model import Flow, Node
from appliance.flow.prompts_catalog import load_prompt_catalog, prompt_ids

__all__ = [
    "INTERDIGIT",
    "NO_INPUT",
    "CallContext",
    "CallState",
    "Flow",
    "Node",
    "graph",
    "load_flow",
    "load_flows",
    "load_prompt_catalog",
    "prompt_ids",
    "start",
    "step",
    "check_dir",
    "validate_dir",
]

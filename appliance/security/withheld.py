"""`security.withheld: ask`: a caller who hides the number is asked to type one before the clinic's flow.

The gate is an ordinary flow built here (an ask into the reserved variable ``caller_number``, then the main flow
as a subflow), so the pure engine runs it like any other: reprompts, read-back, confirmation, silence. A caller
who types nothing usable hears ``withheld_goodbye`` and is hung up (outcome ``withheld``)."""

from __future__ import annotations

from appliance.flow.model import CALLER_VAR, DIGITS_PLACEHOLDER, AskNode, Flow, HangupNode, SubflowNode

GATE_PROMPTS = ("withheld_ask", "withheld_goodbye", "you_entered", "confirm_number", "number_invalid")


def withheld_gate(main: Flow, region: str = "RU") -> Flow:
    """A flow that collects a phone number, then continues at the start of ``main``."""
    russian = region.upper() == "RU"
    ask = AskNode(
        id="ask_number", line=1, prompts=("withheld_ask",), var=CALLER_VAR, next="main",
        min_length=10 if russian else 6, max_length=11 if russian else 15,
        pattern=r"[78]?\d{10}" if russian else None,  # 10 digits, or 11 starting with 8 or 7
        confirm=("you_entered", DIGITS_PLACEHOLDER, "confirm_number"),
        invalid_prompt="number_invalid", invalid="refuse", no_input="refuse",
    )
    nodes = {
        "ask_number": ask,
        "main": SubflowNode(id="main", line=1, flow=main.name),
        "refuse": HangupNode(id="refuse", line=1, goodbye=("withheld_goodbye",), outcome="withheld"),
    }
    return Flow(name=f"__withheld_{main.name}", language=main.language, path="(built in: security.withheld ask)",
                start="ask_number", nodes=nodes, country=main.country, no_input_timeout=main.no_input_timeout,
                interdigit_timeout=main.interdigit_timeout, retries=main.retries, goodbye=main.goodbye,
                silence_goodbye=main.silence_goodbye)

"""Call state for the flow engine: who called (CallContext) and where the call stands (CallState)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

NO_INPUT = "no_input"  # started when a menu/ask prompt finishes; fires -> reprompt or the silent path
INTERDIGIT = "interdigit"  # restarted on every ask digit; fires -> the input is complete


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who called: ``caller`` is E.164 or "anonymous"; ``variables`` seed the call's variables."""

    caller: str
    withheld: bool = False
    called: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    listening: bool = False  # a recogniser is on: speech asks wait for words (else they are skipped)


@dataclass(frozen=True, slots=True)
class CallState:
    """Where a call stands. ``phase`` is "" or "confirm" (an ask reading back the input)."""

    flow: str
    node: str
    context: CallContext
    vars: Mapping[str, str]
    retries: int = 0  # failed tries (invalid or no input) at the current node
    digits: str = ""  # collected by an ask
    phase: str = ""
    playing: bool = False  # the node's own prompt (playback_id) is still playing
    playback_id: int = 0  # id of the last Play issued
    timers: tuple[str, ...] = ()  # timers started and not yet fired or cancelled
    finished: bool = False  # nothing more for the engine to do (hung up, queued, transferred, ended)
    outcome: str = ""

"""Frozen dataclasses for a parsed flow: the Flow and one node class per node type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from appliance.flow.conditions import When

DIGITS_PLACEHOLDER = "$digits"  # in an ask's `confirm:` list: read back what the caller typed
TEXT_PREFIX = "text:"  # a prompt given as literal text instead of a catalog id
CALLER_VAR = "caller_number"  # an ask storing into this variable gives a withheld caller a number to call back


@dataclass(frozen=True, kw_only=True)
class Node:
    """Base of every node; ``line`` is the 1-based line of the node in its file (for error messages)."""

    type: ClassVar[str] = ""
    id: str
    line: int
    label: str = ""

    def edges(self) -> tuple[tuple[str, str], ...]:
        """(edge label, target node id) for every node this one can go to inside the same flow."""
        return ()

    def prompt_ids(self) -> tuple[str, ...]:
        """Every prompt this node may play (catalog ids, ``text:`` prompts and placeholders included)."""
        return ()


@dataclass(frozen=True, kw_only=True)
class SayNode(Node):
    type: ClassVar[str] = "say"
    prompts: tuple[str, ...]
    next: str
    interruptible: bool = True

    def edges(self) -> tuple[tuple[str, str], ...]:
        return (("", self.next),)

    def prompt_ids(self) -> tuple[str, ...]:
        return self.prompts


@dataclass(frozen=True, kw_only=True)
class MenuOption:
    key: str  # one DTMF key: 0-9 * #
    target: str
    keywords: tuple[str, ...] = ()
    label: str = ""
    line: int = 0


@dataclass(frozen=True, kw_only=True)
class MenuNode(Node):
    type: ClassVar[str] = "menu"
    prompts: tuple[str, ...]
    options: tuple[MenuOption, ...]
    interruptible: bool = True
    timeout: float | None = None  # None: the flow's no_input_timeout
    retries: int | None = None  # None: the flow's retries
    invalid: str | None = None  # None: goodbye prompt, then Hangup(outcome="invalid_input")
    no_input: str | None = None  # None: silence_goodbye prompt, then Hangup(outcome="silent")
    invalid_prompt: str | None = None
    no_input_prompt: str | None = None

    def option(self, key: str) -> MenuOption | None:
        return next((o for o in self.options if o.key == key), None)

    def keywords(self) -> tuple[str, ...]:
        return tuple(k for o in self.options for k in o.keywords)

    def edges(self) -> tuple[tuple[str, str], ...]:
        out = [
            (o.key + (f" {o.label or o.keywords[0]}" if o.label or o.keywords else ""), o.target)
            for o in self.options
        ]
        if self.invalid:
            out.append(("invalid", self.invalid))
        if self.no_input:
            out.append(("no input", self.no_input))
        return tuple(out)

    def prompt_ids(self) -> tuple[str, ...]:
        extra = tuple(p for p in (self.invalid_prompt, self.no_input_prompt) if p)
        return self.prompts + extra


@dataclass(frozen=True, kw_only=True)
class AskNode(Node):
    type: ClassVar[str] = "ask"
    prompts: tuple[str, ...]
    var: str
    next: str
    min_length: int = 1
    max_length: int = 20
    terminator: str = "#"  # "" = none; the key "*" always clears what was typed so far
    pattern: str | None = None  # a regular expression the whole input must match
    check: str | None = None  # "date" / "date_of_birth": DDMMYYYY must be a real date (see ASK_CHECKS)
    confirm: tuple[str, ...] = ()  # read back and ask 1 = yes / 2 = type again; "$digits" = the input
    input: str = "digits"  # digits: keys or numbers said aloud; speech: free words (a home visit's reason)
    interruptible: bool = True
    timeout: float | None = None
    interdigit_timeout: float | None = None
    retries: int | None = None
    invalid: str | None = None
    no_input: str | None = None
    invalid_prompt: str | None = None
    no_input_prompt: str | None = None

    def edges(self) -> tuple[tuple[str, str], ...]:
        out = [("", self.next)]
        if self.invalid:
            out.append(("invalid", self.invalid))
        if self.no_input:
            out.append(("no input", self.no_input))
        return tuple(out)

    def prompt_ids(self) -> tuple[str, ...]:
        extra = tuple(p for p in (self.invalid_prompt, self.no_input_prompt) if p)
        return self.prompts + self.confirm + extra


@dataclass(frozen=True, kw_only=True)
class Case:
    when: When
    target: str
    label: str = ""
    line: int = 0


@dataclass(frozen=True, kw_only=True)
class BranchNode(Node):
    type: ClassVar[str] = "branch"
    cases: tuple[Case, ...]
    default: str

    def edges(self) -> tuple[tuple[str, str], ...]:
        return tuple((c.label or c.when.text, c.target) for c in self.cases) + (("otherwise", self.default),)


@dataclass(frozen=True, kw_only=True)
class QueueNode(Node):
    """Hand the call to a named queue (the ACD owns it from then on)."""

    type: ClassVar[str] = "queue"
    queue: str
    prompts: tuple[str, ...] = ()  # announced, not interruptible, before the hand-over

    def prompt_ids(self) -> tuple[str, ...]:
        return self.prompts


@dataclass(frozen=True, kw_only=True)
class TransferNode(Node):
    """Transfer to a target *name* configured in the box settings, never a dialled number."""

    type: ClassVar[str] = "transfer"
    target: str
    prompts: tuple[str, ...] = ()
    timeout: float | None = None  # seconds the target may ring; None: the flow's transfer_timeout
    no_answer: str | None = None  # where to go when the target is busy, does not answer or is not configured

    def prompt_ids(self) -> tuple[str, ...]:
        return self.prompts

    def edges(self) -> tuple[tuple[str, str], ...]:
        return (("no answer", self.no_answer),) if self.no_answer else ()


@dataclass(frozen=True, kw_only=True)
class CallbackNode(Node):
    type: ClassVar[str] = "request_callback"
    reason: str
    next: str
    number_var: str | None = None  # a variable set by an ask; unset/empty: the caller's own number
    no_number: str | None = None  # where to go when there is no number (withheld, nothing typed)
    prompts: tuple[str, ...] = ()  # played after the request is recorded

    def edges(self) -> tuple[tuple[str, str], ...]:
        out = [("", self.next)]
        if self.no_number:
            out.append(("no number", self.no_number))
        return tuple(out)

    def prompt_ids(self) -> tuple[str, ...]:
        return self.prompts


@dataclass(frozen=True, kw_only=True)
class SetNode(Node):
    type: ClassVar[str] = "set"
    values: tuple[tuple[str, str], ...]
    next: str

    def edges(self) -> tuple[tuple[str, str], ...]:
        return (("", self.next),)


@dataclass(frozen=True, kw_only=True)
class GotoNode(Node):
    type: ClassVar[str] = "goto"
    target: str

    def edges(self) -> tuple[tuple[str, str], ...]:
        return (("", self.target),)


@dataclass(frozen=True, kw_only=True)
class SubflowNode(Node):
    """Jump to the start of another flow (no return); the call continues there."""

    type: ClassVar[str] = "subflow"
    flow: str


@dataclass(frozen=True, kw_only=True)
class HangupNode(Node):
    type: ClassVar[str] = "hangup"
    goodbye: tuple[str, ...] = ()
    outcome: str = "completed"

    def prompt_ids(self) -> tuple[str, ...]:
        return self.goodbye


NODE_TYPES: dict[str, type[Node]] = {
    cls.type: cls
    for cls in (
        SayNode,
        MenuNode,
        AskNode,
        BranchNode,
        QueueNode,
        TransferNode,
        CallbackNode,
        SetNode,
        GotoNode,
        SubflowNode,
        HangupNode,
    )
}


@dataclass(frozen=True, kw_only=True)
class Flow:
    """One flow file. ``name`` is the file stem; defaults apply to every menu and ask that sets none."""

    name: str
    language: str
    path: str
    start: str
    nodes: Mapping[str, Node] = field(default_factory=dict)
    description: str = ""
    country: str = "RU"  # public holiday calendar for `hours`, `workday`, `holiday`, `lunch`
    no_input_timeout: float = 5.0
    interdigit_timeout: float = 3.0
    retries: int = 2  # reprompts after the first try, so 3 tries in all
    silence_goodbye: str = "silence_goodbye"
    invalid_prompt: str = "invalid"
    no_input_prompt: str = "no_input_reprompt"
    goodbye: str = "goodbye"
    transfer_failed: str = "transfer_failed"  # said before hanging up when a transfer without no_answer fails
    transfer_timeout: float = 30.0
    line: int = 1

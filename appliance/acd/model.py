"""ACD vocabulary: queue and agent settings, agent and caller state, actions out and queue_log records."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from appliance.errors import ConfigError

# ------------------------------------------------------------------------------------------------ settings


class Strategy(StrEnum):
    RING_ALL = "ring_all"  # ring every free agent at the lowest penalty at once; the first to answer wins
    LONGEST_IDLE = "longest_idle"  # ring the free agent whose last call (wrap-up included) ended longest ago
    ROUND_ROBIN = "round_robin"  # ring the next free agent after the one rung last, in settings order
    FEWEST_CALLS = "fewest_calls"  # ring the free agent who took the fewest calls (ties: longest idle)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One receptionist's phone."""

    uri: str  # "sip:101@192.168.1.21": also the agent's id in the queue log
    name: str = ""
    skills: frozenset[str] = frozenset()
    penalty: int = 0  # lower rings first: an agent with a higher penalty rings only when no lower one is free


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """When callbacks are scheduled after an abandon and how the dialer retries them."""

    on_abandon: bool = True  # schedule a callback automatically when a waiting caller hangs up
    abandon_after: float = 10.0  # ...but only if they waited more than this many seconds
    window: float = 4 * 3600.0  # at most one automatic callback per number per this many seconds
    max_attempts: int = 3  # patient legs that end unanswered before the dialer gives up
    backoff: tuple[float, ...] = (120.0, 600.0)  # delay before attempt 2, 3, ...; the last one repeats
    agent_retry: float = 30.0  # no receptionist answered: look for one again this much later
    agent_ring_timeout: float = 20.0
    patient_ring_timeout: float = 40.0
    expire_after: float = 8 * 3600.0  # a callback still pending this long after it was asked for fails

    def delay_after(self, attempts: int) -> float:
        """Back-off before the next patient attempt once ``attempts`` (>= 1) legs went unanswered."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(attempts, len(self.backoff)) - 1]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One named queue. Times are seconds; 0 turns the max-wait offer and periodic announcements off."""

    name: str
    agents: tuple[AgentConfig, ...] = ()
    strategy: Strategy = Strategy.LONGEST_IDLE
    ring_timeout: float = 15.0  # ring an agent this long before counting a miss
    retry: float = 5.0  # an agent who just missed is not rung again for this long (phones need a breath)
    wrapup: float = 10.0  # after each call the agent gets this long before the next one rings
    max_wait: float = 60.0  # offer a callback after this wait
    timeout: float = 0.0  # leave the queue (EXITWITHTIMEOUT) after this wait; 0 = never
    service_level: float = 20.0  # the "20" of SL 80/20
    announce_every: float = 30.0  # repeat position / expected wait this often
    announce_min_gap: float = 10.0  # but never two announcements closer than this, even if the position moved
    max_missed: int = 3  # an agent who misses this many offered calls in a row is paused; 0 = never
    skills: frozenset[str] = frozenset()  # an agent must have all of these to serve this queue
    default_handle_time: float = 180.0  # seconds per call for the expected-wait estimate until calls are seen
    callback: CallbackPolicy = field(default_factory=CallbackPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", _strategy(self.name, self.strategy))
        for key in ("ring_timeout", "default_handle_time"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"queues.{self.name}.{key} must be more than 0 seconds")
        for key in ("retry", "wrapup", "max_wait", "timeout", "service_level", "announce_every", "announce_min_gap"):
            if getattr(self, key) < 0:
                raise ConfigError(f"queues.{self.name}.{key} must be 0 or more seconds")
        if self.max_missed < 0:
            raise ConfigError(f"queues.{self.name}.max_missed must be 0 (never pause) or more")
        uris = [a.uri for a in self.agents]
        if len(set(uris)) != len(uris):
            raise ConfigError(f"queues.{self.name}.agents lists the same phone twice; list each URI once")


def _strategy(queue: str, value: str) -> Strategy:
    try:
        return Strategy(value)
    except ValueError:
        names = ", ".join(s.value for s in Strategy)
        raise ConfigError(f"queues.{queue}.strategy: unknown strategy {value!r}; use one of {names}") from None


# ------------------------------------------------------------------------------------------------ state


class AgentStatus(StrEnum):
    IDLE = "idle"
    RINGING = "ringing"
    BUSY = "busy"
    WRAPUP = "wrapup"
    PAUSED = "paused"  # PAUSED and OFFLINE are only shown (``AgentState.shown``): they are flags beside
    OFFLINE = "offline"  # the status, so a receptionist paused mid-call finishes the call first


@dataclass(frozen=True, slots=True)
class AgentState:
    """One agent as the queue sees it: ``status`` is what the phone is doing; paused/online are flags."""

    config: AgentConfig
    status: AgentStatus = AgentStatus.IDLE
    since: float = 0.0  # when ``status`` began (ring start, answer, wrap-up start, ...)
    idle_since: float = 0.0  # when the agent last became free after a call; longest_idle orders by this
    paused: bool = False
    pause_reason: str = ""
    online: bool = True  # the phone is registered / reachable (fed by the shell)
    rest_until: float = 0.0  # not rung before this (``QueueConfig.retry`` after a miss)
    calls_taken: int = 0
    missed: int = 0  # offered calls not answered in a row; reset by an answer or a resume
    target: str = ""  # the caller's call id (or callback id) being rung or talked to

    @property
    def uri(self) -> str:
        return self.config.uri

    @property
    def shown(self) -> AgentStatus:
        """The state for people and metrics: an agent with nothing to do shows as offline, then paused."""
        if self.status is AgentStatus.IDLE and not self.online:
            return AgentStatus.OFFLINE
        if self.status is AgentStatus.IDLE and self.paused:
            return AgentStatus.PAUSED
        return self.status

    @property
    def staffed(self) -> bool:
        """Counts as a server for the expected wait: neither paused nor offline (busy ones will come free)."""
        return self.online and not self.paused

    def free(self, now: float) -> bool:
        return self.status is AgentStatus.IDLE and self.staffed and now >= self.rest_until


@dataclass(frozen=True, slots=True)
class WaitingCaller:
    """A live caller in the queue (from ``caller_joined`` until connected or gone)."""

    call_id: str
    number: str  # E.164 when known
    entered_at: float
    withheld: bool = False
    blocked: bool = False
    needs: frozenset[str] = frozenset()  # skills the agent must have (e.g. "en" for the English menu)
    position: int = 0  # 1-based among live callers
    orig_position: int = 0  # position on entering
    ringing: tuple[str, ...] = ()  # agent URIs being rung for this caller right now
    tried: frozenset[str] = frozenset()  # agents that missed this caller (tried others first)
    announced_at: float | None = None
    announced_position: int = 0  # 0 = never announced
    offered_callback: bool = False


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """The queue right now, for metrics and the staff page."""

    queue: str
    waiting: int  # live callers (callbacks not counted)
    longest_wait: float  # seconds the first live caller has waited; 0 when nobody waits
    callers: tuple[WaitingCaller, ...]
    agents: tuple[AgentState, ...]
    agents_by_state: dict[str, int]  # AgentState.shown -> count, every state present (0 included)
    callbacks_waiting: int  # due callbacks waiting for a free agent


# ------------------------------------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class RingAgents:
    """Start ringing these agents for the caller (their legs are bridged on ``Bridge``)."""

    call_id: str
    agents: tuple[str, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class StopRinging:
    """Cancel these agent legs (another agent answered, the caller left, the ring timed out)."""

    call_id: str
    agents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Bridge:
    call_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class Announce:
    """Tell the caller their position; ``expected_wait`` in seconds, None when no estimate can be made."""

    call_id: str
    position: int
    expected_wait: float | None


@dataclass(frozen=True, slots=True)
class OfferCallback:
    """Play "press 1 and we will call you back; you keep your place"."""

    call_id: str


@dataclass(frozen=True, slots=True)
class ScheduleCallback:
    """Store a callback (durably, with this step's records) and hand it to the dialer.

    ``priority_at`` is the caller's queue entry time when they keep their place (accepted offer), None for
    a callback after an abandon (served after live callers).
    """

    call_id: str
    queue: str
    number: str
    waited: float
    reason: str  # "offer" | "abandon"
    priority_at: float | None


@dataclass(frozen=True, slots=True)
class LeaveQueue:
    """The caller is out of the queue without an agent; the session goes on with the flow."""

    call_id: str
    reason: str  # "timeout"


@dataclass(frozen=True, slots=True)
class AgentForCallback:
    """A free agent was reserved for a due callback: start the dialer's agent leg."""

    callback_id: str
    agent: str


AcdAction = (
    RingAgents | StopRinging | Bridge | Announce | OfferCallback | ScheduleCallback | LeaveQueue | AgentForCallback
)

# ------------------------------------------------------------------------------------------------ queue log


class QueueEvent(StrEnum):
    """queue_log event names. Asterisk's name is given where ours differs."""

    ENTER = "ENTER"  # Asterisk ENTERQUEUE
    RINGNOANSWER = "RINGNOANSWER"
    RINGCANCELED = "RINGCANCELED"
    CONNECT = "CONNECT"
    ABANDON = "ABANDON"
    EXITWITHTIMEOUT = "EXITWITHTIMEOUT"
    EXITWITHKEY = "EXITWITHKEY"  # DTMF breakout
    EXIT_CALLBACK = "EXIT_CALLBACK"  # accepted the callback offer (no Asterisk equivalent)
    COMPLETECALLER = "COMPLETECALLER"
    COMPLETEAGENT = "COMPLETEAGENT"
    AGENTPAUSED = "AGENTPAUSED"  # Asterisk PAUSE
    AGENTUNPAUSED = "AGENTUNPAUSED"  # Asterisk UNPAUSE
    ADDMEMBER = "ADDMEMBER"
    REMOVEMEMBER = "REMOVEMEMBER"
    CALLBACK_OFFERED = "CALLBACK_OFFERED"
    CALLBACK_SCHEDULED = "CALLBACK_SCHEDULED"
    CALLBACK_SKIPPED = "CALLBACK_SKIPPED"  # an abandon got no callback; ``detail`` says which rule
    CALLBACK_ATTEMPT = "CALLBACK_ATTEMPT"  # dialling the patient (agent already on the line)
    CALLBACK_RETRY = "CALLBACK_RETRY"  # the patient leg failed; ``detail`` says why and when next
    CALLBACK_DONE = "CALLBACK_DONE"
    CALLBACK_FAILED = "CALLBACK_FAILED"  # gave up; ``detail`` says why


NONE = "NONE"  # call_id / agent of records that have none (as Asterisk writes)


@dataclass(frozen=True, slots=True)
class QueueLogRecord:
    """One queue_log row. Times are epoch seconds; durations in seconds; None = not applicable."""

    queue: str
    call_id: str
    agent: str
    event: QueueEvent
    at: float
    wait: float | None = None  # time in queue so far (ENTER excluded)
    position: int | None = None
    orig_position: int | None = None
    talk: float | None = None  # COMPLETE*: seconds bridged
    ring: float | None = None  # RINGNOANSWER / CONNECT: seconds the agent's phone rang
    number: str = ""  # the caller's number (ENTER, ABANDON and callback records)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    """What one input produced: write ``records`` durably first, then carry out ``actions`` in order."""

    records: tuple[QueueLogRecord, ...] = ()
    actions: tuple[AcdAction, ...] = ()

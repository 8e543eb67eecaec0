"""The shared vocabulary: frozen events in (from telephony and timers) and actions out (from the engine).

Events carry plain values only (never pjsua2 objects) so that they can cross from the pj thread to the
asyncio loop and be fed to the pure flow engine and to tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class CallOffered:
    """An INVITE from an allowed source reached the box (not yet answered)."""

    call_id: str  # the box's own id for the call (telephony slot + counter); unique per process
    sip_call_id: str
    caller: str  # raw user part of From / P-Asserted-Identity ("" or "anonymous" when withheld)
    caller_name: str
    called: str  # raw user part of the request URI / To
    source: str  # "ip:port" the INVITE came from


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The box answered and media is flowing: prompts can be played."""

    call_id: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    call_id: str
    digit: str  # one of 0-9 * # A-D
    method: str  # "rfc2833" | "sip_info" | "inband"


@dataclass(frozen=True, slots=True)
class PlaybackDone:
    """A Play action finished (or was stopped); ``playback_id`` ties it to the action."""

    call_id: str
    playback_id: int
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class TimerFired:
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class SpeechHeard:
    """Caller speech recognised (speech issue). ``text`` is a transcript, lowercase. ``spotted``: at a menu,
    when the words name no option, the (option key, keyword) the recogniser's scores fit (``speech.ctc``); at a
    read-back, when the words are neither yes nor no, ("yes" | "no", phrase) the same way."""

    call_id: str
    text: str
    confidence: float
    spotted: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class VoiceActivity:
    """The VAD saw the caller start (``speaking=True``) or stop speaking."""

    call_id: str
    speaking: bool


@dataclass(frozen=True, slots=True)
class Utterance:
    """A stretch of the caller's speech cut by the model VAD (with a little audio before it started), for the
    recogniser. Only for calls whose VAD sees every frame (Silero); 16-bit mono PCM."""

    call_id: str
    pcm: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True)
class LineSilent:
    """No audio energy at all from the line for ``seconds`` (dead FXO line)."""

    call_id: str
    seconds: float


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """The transfer target did not take the call: busy, no answer, unreachable or not configured."""

    call_id: str
    reason: str  # "busy" | "no_answer" | "failed" | "not_configured"


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is gone: the caller hung up, the box hung up, or it failed."""

    call_id: str
    by: str  # "caller" | "box" | "error"
    status_code: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class InviteRejected:
    """An INVITE the box refused before any flow saw it (stranger, over capacity, shutting down)."""

    source: str
    reason: str  # "not_allowed" | "capacity" | "shutting_down"
    status_code: int


Event = (
    CallOffered
    | CallAnswered
    | DtmfReceived
    | PlaybackDone
    | TimerFired
    | SpeechHeard
    | VoiceActivity
    | Utterance
    | LineSilent
    | TransferFailed
    | CallEnded
    | InviteRejected
)

# --------------------------------------------------------------------------------------------- actions out


@dataclass(frozen=True, slots=True)
class Play:
    """Play prompts in order. Prompts are ids from ``voices/<lang>/`` (or ``text:...`` for dynamic text)."""

    prompts: tuple[str, ...]
    playback_id: int
    interruptible: bool = True  # a digit (or caller speech) stops it


@dataclass(frozen=True, slots=True)
class StopPlayback:
    pass


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Listen:
    """Ask the speech layer to recognise caller speech, optionally constrained to these phrases."""

    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Enqueue:
    queue: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """Ring a configured target while the caller hears music; bridge on answer (TransferFailed otherwise)."""

    target: str  # a configured target name, never a number the caller typed
    seconds: float = 30.0  # how long the target may ring


@dataclass(frozen=True, slots=True)
class RequestCallback:
    reason: str
    number: str = ""  # "" = the caller's own number


@dataclass(frozen=True, slots=True)
class SetVar:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the call's timeline (what happened and why), stored with the call record."""

    kind: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Hangup:
    outcome: str  # "completed" | "silent" | "blocked" | ...
    goodbye: tuple[str, ...] = field(default=())  # prompts to play before hanging up


Action = (
    Play
    | StopPlayback
    | StartTimer
    | CancelTimer
    | Listen
    | Enqueue
    | Transfer
    | RequestCallback
    | SetVar
    | Note
    | Hangup
)

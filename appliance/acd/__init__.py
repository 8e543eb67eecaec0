"""Queue and receptionists (ACD): pure cores for the queue, the callback dialer and SL/AAR statistics."""

from appliance.acd.model import (
    AgentConfig,
    AgentState,
    AgentStatus,
    CallbackPolicy,
    QueueConfig,
    QueueEvent,
    QueueLogRecord,
    QueueSnapshot,
    Step,
    Strategy,
    WaitingCaller,
)
from appliance.acd.queue import QueueCore

__all__ = [
    "AgentConfig",
    "AgentState",
    "AgentStatus",
    "CallbackPolicy",
    "QueueConfig",
    "QueueCore",
    "QueueEvent",
    "QueueLogRecord",
    "QueueSnapshot",
    "Step",
    "Strategy",
    "WaitingCaller",
]

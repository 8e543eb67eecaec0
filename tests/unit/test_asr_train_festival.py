"""Festival as a second synthesiser of tools/asr_train (issue 8): the plan (espeak-ng's draws unchanged, festival's
own stream, held-out engine = test split only), the skip when festival is absent, a real rendering when it is
installed (Debian festival + festvox-ru, not in tools/dev's list: skipped without them), and the model card's
Festival section written from an evaluation report."""

from __future__ import annotations

import json
import shutil

import pytest

np = pytest.importorskip("numpy")

from tools.asr_train import card, synth  # noqa: E402

ITEMS = [
    {"text": "запись к врачу", "kind": "menu:clinic_ru:main_menu:1", "ref": "1"},
    {"text": "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь", "kind": "phone",
     "ref": "89161234567"},
    {"text": "двадцать третьего февраля", "kind": "date", "ref": ""},
]


def test_plan_adds_festival_without_changing_espeak():
    per_kind = {"menu": 30}
    alone = synth.plan(ITEMS, 6, 1, per_kind)
    both = synth.plan(ITEMS, 6, 1, per_kind, {"espeak": 1.0, "festival": 0.25})
    espeak = [j for j in both if synth.engine_of(j["voice"]) == "espeak"]
    fest = [j for j in both if synth.engine_of(j["voice"]) == "festival"]
    assert espeak == alone
    assert {j["id"] for j in fest}.isdisjoint({j["id"] for j in alone})
    train = [j for j in fest if j["split"] == "train"]
    assert len([j for j in train if j["kind"].startswith("menu")]) == 8  # a quarter of 30, rounded
    assert len([j for j in train if j["kind"] == "date"]) == 2  # a quarter of 6, rounded
    assert all(j["speed"] in synth.FEST_TEMPI and j["pitch"] in synth.FEST_PITCHES for j in train)
    test = [j for j in fest if j["split"] == "test"]
    assert len(test) == 2  # menu and phone; dates have no test rendering
    assert all(j["speed"] == synth.FEST_HELD_TEMPO or j["pitch"] in synth.FEST_HELD_PITCHES for j in test)


def test_held_out_engine_renders_the_test_split_only_in_its_own_voice():
    jobs = synth.plan(ITEMS, 6, 1, None, {}, ("festival",))
    assert [(j["text"], j["split"], j["voice"], j["speed"], j["pitch"]) for j in jobs] == [
        (it["text"], "test", "festival:msu_ru_nsh", 100, 0) for it in ITEMS[:2]]
    with pytest.raises(ValueError):
        synth.plan(ITEMS, 6, 1, None, {"festival": 1.0}, ("festival",))
    assert synth.describe(jobs[0]) == "festival msu_ru_nsh, tempo 100 %, pitch +0 st"
    assert synth.describe({"voice": "ru+m7", "speed": 210, "pitch": 50}) == "ru+m7, 210 wpm"


def test_missing_festival_is_skipped_with_a_message(tmp_path, monkeypatch, capsys):
    phrases = tmp_path / "phrases.jsonl"
    phrases.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ITEMS), encoding="utf-8")
    monkeypatch.setattr(synth, "unavailable", lambda e: "festival is not installed (test)" if e == "festival" else None)
    assert synth.main(["--phrases", str(phrases), "--out", str(tmp_path / "clips"), "--engines", "",
                       "--held-out-engines", "festival"]) == 0
    assert "engine festival skipped: festival is not installed" in capsys.readouterr().err
    assert (tmp_path / "clips" / "clips.jsonl").read_text() == ""


@pytest.mark.skipif(not shutil.which("festival") or not shutil.which("sox"), reason="festival and sox needed")
def test_festival_renders_russian_and_varies_tempo_and_pitch(tmp_path):
    if synth.unavailable("festival"):
        pytest.skip(synth.unavailable("festival"))
    raw = synth.festival_raw([ITEMS[0]["text"]], tmp_path)[ITEMS[0]["text"]]
    x, rate = synth.read_wav(raw)
    assert rate == synth.RATE and 0.8 < len(x) / rate < 2.5 and np.max(np.abs(x)) > 0.1
    natural = synth.festival(raw, 100, 0)
    faster = synth.festival(raw, 125, 0)
    lower = synth.festival(raw, 100, -5)
    assert 0.7 < len(faster) / len(natural) < 0.9  # tempo 125 %: 0.8 of the length
    assert 0.9 < len(lower) / len(natural) < 1.1  # pitch alone keeps the length
    assert not np.allclose(lower[: len(natural) // 2], natural[: len(natural) // 2], atol=1e-2)


REPORT = {"date": "2026-12-05", "model_sha256": "ab" * 32, "kinds": {"phone": 2, "menu": 1}, "clips": 3,
          "audio_seconds": 9.0, "cer": 0.3, "cer_by_kind": {"menu": 0.2, "phone": 0.31},
          "menu_intent_accuracy": 0.0, "menu_clips": 1, "menu_intent_words_only": 0.0, "spotted": 0,
          "spotted_wrong": 0, "spot_max_cost": 4.0, "spot_margin": 2.0, "non_answers_chosen": 0,
          "non_answers_at_menus": 0, "phone_exact_accuracy": 0.5, "phone_clips": 2,
          "menu_misses": [{"ref": "запись к врачу", "hyp": "зыс", "menu": "main_menu", "want": "1", "got": None}],
          "phone_misses": [{"ref": "восемь", "hyp": "осе"}]}
CARD = ("# ru-commands\n\n- **Files**: `model.int8.onnx` sha256 `" + "ab" * 32 + "`, x\n- **Data**: synthetic\n"
        "  Voices: eSpeak NG, training voices ru, ru+m1; speeds\n- **Evaluation**: a\n- **Limits**: b\n"
        "- **License**: c\n")


def test_card_festival_section_is_written_and_rewritten_from_the_report():
    once = card.update_section(CARD, REPORT, "tools/asr_train/train.sh --festival-eval")
    assert once.index(card.FESTIVAL_BEGIN) < once.index("- **Limits**") and "- **Evaluation**: a\n<!--" in once
    assert "menu intent 0.0 % (1 clips" in once and "exact 11-digit phone number 50.0 % (2 clips" in once
    assert "never in this model's training data" in once and "**Below target (menu intent, phone numbers)**" in once
    assert "`tools/asr_train/train.sh --festival-eval`" in once
    twice = card.update_section(once, {**REPORT, "phone_exact_accuracy": 1.0}, "cmd")
    assert twice.count(card.FESTIVAL_BEGIN) == 1 and "phone number 100.0 %" in twice and "50.0 %" not in twice
    assert twice.replace(twice[twice.index(card.FESTIVAL_BEGIN): twice.index(card.FESTIVAL_END)], "") == \
        once.replace(once[once.index(card.FESTIVAL_BEGIN): once.index(card.FESTIVAL_END)], "")
    with pytest.raises(SystemExit):
        card.update_section(CARD, {**REPORT, "model_sha256": "cd" * 32}, "cmd")
    trained = CARD.replace("speeds\n", "speeds;\n  Festival 2.5.0 with festvox-ru's msu_ru_nsh_clunits, tempo\n")
    assert "at the held-out 125 % tempo" in card.update_section(trained, REPORT, "cmd")

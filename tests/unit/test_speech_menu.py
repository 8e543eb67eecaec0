"""Transcript → menu option on real Russian phrasings, against the keywords of the shipped clinic_ru flow.

What a recogniser hands over is lowercase words; ``appliance.flow.keywords.choose`` is what the flow
engine runs on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.flow import keywords, load_flow
from appliance.flow.model import MenuNode
from appliance.speech.numbers_ru import menu_key

FLOW = Path(__file__).resolve().parents[2] / "ivr_flows" / "clinic_ru.yaml"


@pytest.fixture(scope="module")
def menus() -> dict[str, MenuNode]:
    flow = load_flow(FLOW)
    return {k: n for k, n in flow.nodes.items() if isinstance(n, MenuNode)}


def choose(menus: dict[str, MenuNode], node: str, text: str) -> str | None:
    found = keywords.choose(text, ((o.key, o.keywords) for o in menus[node].options))
    return found[0] if found else None


HEARD = [
    # main menu: 1 appointment, 2 home visit, 3 sick leave, 4 vaccination, 5 tests, 6 paid/OMS/DMS,
    # 0 reception, 9 repeat
    ("main_menu", "я хочу записаться к терапевту", "1"),
    ("main_menu", "запишите меня к врачу", "1"),
    ("main_menu", "запись к врачу", "1"),
    ("main_menu", "на прием к хирургу", "1"),
    ("main_menu", "хочу записаться на прием", "1"),
    ("main_menu", "мне нужно вызвать врача на дом", "2"),
    ("main_menu", "вызов врача на дом", "2"),
    ("main_menu", "врача на дом пожалуйста", "2"),
    ("main_menu", "у ребенка температура нужен врач на дом", "2"),
    ("main_menu", "больничный", "3"),
    ("main_menu", "закрыть больничный лист", "3"),
    ("main_menu", "продлить больничный", "3"),
    ("main_menu", "справка о нетрудоспособности", "3"),
    ("main_menu", "прививка от гриппа", "4"),
    ("main_menu", "хочу сделать прививку", "4"),
    ("main_menu", "запишите на прививку", "4"),  # the longer keyword wins over "запись"
    ("main_menu", "вакцинация ребенка", "4"),
    ("main_menu", "вакцина от ковида", "4"),
    ("main_menu", "сдать анализы", "5"),
    ("main_menu", "анализ крови", "5"),
    ("main_menu", "как подготовиться к узи", "5"),
    ("main_menu", "результаты анализов", "5"),
    ("main_menu", "платные услуги", "6"),
    ("main_menu", "у меня полис омс", "6"),
    ("main_menu", "по дмс", "6"),
    ("main_menu", "оператор", "0"),
    ("main_menu", "соедините с регистратурой", "0"),
    ("main_menu", "позовите администратора", "0"),
    ("main_menu", "повторите", "9"),
    ("main_menu", "ещё раз пожалуйста", "9"),
    # phrasings the first keywords missed, fixed by synonyms in clinic_ru.yaml
    ("main_menu", "вызвать доктора", "2"),
    ("main_menu", "сколько стоит прием", "6"),
    ("main_menu", "живой человек", "0"),
    ("main_menu", "соедините с человеком", "0"),
    ("main_menu", "не расслышал", "9"),
    ("main_menu", "к окулисту", "1"),
    ("main_menu", "дэ эм эс", "6"),  # a letter recogniser spells abbreviations out
    ("main_menu", "записаться на анализы", "5"),
    ("tests_menu", "кровь", "1"),
    ("tests_menu", "анализ крови", "1"),
    ("tests_menu", "узи брюшной полости", "2"),
    ("tests_menu", "ультразвук", "2"),
    ("tests_menu", "анализ мочи", "3"),
    ("tests_menu", "в главное меню", "*"),
    ("closed_menu", "когда вы работаете", "1"),
    ("closed_menu", "режим работы", "1"),
    ("closed_menu", "перезвоните мне", "2"),
    ("closed_menu", "обратный звонок", "2"),
    ("closed_menu", "справка", "3"),
    ("more_menu", "соедините с регистратурой", "0"),
    ("more_menu", "назад", "*"),
]

NOTHING = [
    ("main_menu", "алло алло"),
    ("main_menu", "подождите минутку"),
    ("more_menu", "спасибо всё"),
    ("main_menu", ""),
]


@pytest.mark.parametrize("node,text,key", HEARD)
def test_heard_option(menus, node, text, key):
    assert choose(menus, node, text) == key


@pytest.mark.parametrize("node,text", NOTHING)
def test_no_option_for_talk(menus, node, text):
    assert choose(menus, node, text) is None


@pytest.mark.parametrize("text,key", [("один", "1"), ("второй", "2"), ("нажимаю ноль", "0"), ("девять", "9")])
def test_spoken_key_is_an_option(menus, text, key):
    """A caller who says the digit: numbers_ru.menu_key gives the key the keywords miss."""
    assert keywords.best_match(text, ((o.key, o.keywords) for o in menus["main_menu"].options)) is None
    assert menu_key(text) == key
    assert choose(menus, "main_menu", text) == key


@pytest.mark.parametrize(("text", "key"), [
    ("запис к врачу", "1"), ("вызвать врыча", "2"), ("больнычный", "3"), ("прывивка", "4"), ("регистротура", "0"),
])
def test_a_keyword_spelt_almost_right_still_chooses(menus, text, key):
    """A small letter recogniser's slips (one letter in six) still land; talk stays unmatched (NOTHING)."""
    assert choose(menus, "main_menu", text) == key


@pytest.mark.parametrize("text", ["чау огно ты", "оля оя", "вачбном", "какая погода", "я подумаю"])
def test_garble_and_talk_choose_nothing(menus, text):
    assert choose(menus, "main_menu", text) is None

"""Russian grammar of dynamic phrases: positions and minutes as callers hear them."""

import pytest

from appliance.speech.phrases import expected_wait, queue_position, waited


@pytest.mark.parametrize(("n", "text"), [
    (1, "Вы первый в очереди."), (2, "Вы второй в очереди."), (3, "Вы третий в очереди."),
    (11, "Вы одиннадцатый в очереди."), (21, "Вы двадцать первый в очереди."),
])
def test_positions(n, text):
    assert queue_position(n) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (30, "одна минута"), (61, "две минуты"), (240, "четыре минуты"), (300, "пять минут"),
    (660, "одиннадцать минут"), (1260, "двадцать одна минута"), (1320, "двадцать две минуты"),
])
def test_expected_wait(seconds, text):
    assert expected_wait(seconds) == f"Примерное время ожидания — {text}."


def test_no_estimate_says_nothing():
    assert expected_wait(None) == ""


def test_english_and_waited():
    assert queue_position(3, "en") == "You are number three in line."
    assert expected_wait(90, "en") == "The expected wait is about two minutes."
    assert waited(180) == "три минуты"
    assert waited(60) == "одну минуту"

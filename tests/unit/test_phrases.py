"""Russian grammar of dynamic phrases: positions, durations, times of day and dates as callers hear them
(and the English counterparts for English flows)."""

from datetime import date, time

import pytest

from appliance.speech.phrases import (
    date_phrase,
    duration,
    expected_wait,
    in_time,
    queue_phrases,
    queue_position,
    time_of_day,
    waited,
)


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


@pytest.mark.parametrize(("minutes", "ru", "en"), [
    (1, "через одну минуту", "in one minute"),
    (2, "через две минуты", "in two minutes"),
    (4, "через четыре минуты", "in four minutes"),
    (5, "через пять минут", "in five minutes"),
    (11, "через одиннадцать минут", "in eleven minutes"),
    (12, "через двенадцать минут", "in twelve minutes"),
    (21, "через двадцать одну минуту", "in twenty-one minutes"),
    (22, "через двадцать две минуты", "in twenty-two minutes"),
    (45, "через сорок пять минут", "in forty-five minutes"),
    (60, "через час", "in an hour"),
    (61, "через час и одну минуту", "in an hour and one minute"),
    (90, "через час и тридцать минут", "in an hour and thirty minutes"),
    (120, "через два часа", "in two hours"),
    (125, "через два часа и пять минут", "in two hours and five minutes"),
    (300, "через пять часов", "in five hours"),
    (21 * 60, "через двадцать один час", "in twenty-one hours"),
])
def test_in_time(minutes, ru, en):
    assert in_time(minutes) == ru
    assert in_time(minutes, "en") == en


@pytest.mark.parametrize(("minutes", "nominative", "accusative"), [
    (1, "одна минута", "одну минуту"),
    (3, "три минуты", "три минуты"),
    (31, "тридцать одна минута", "тридцать одну минуту"),
    (60, "один час", "час"),
    (62, "один час и две минуты", "час и две минуты"),
    (181, "три часа и одна минута", "три часа и одну минуту"),
])
def test_duration_cases(minutes, nominative, accusative):
    """Nominative after a dash ("время ожидания — одна минута"), accusative after "через"/"ждал"."""
    assert duration(minutes) == nominative
    assert duration(minutes, case="accusative") == accusative


def test_duration_rejects_nonsense():
    with pytest.raises(ValueError):
        duration(-1)
    with pytest.raises(ValueError):
        duration(5, case="dative")


@pytest.mark.parametrize(("hh", "mm", "ru", "en"), [
    (10, 30, "в десять тридцать", "at ten thirty in the morning"),
    (9, 5, "в девять ноль пять", "at nine oh five in the morning"),
    (8, 0, "в восемь часов", "at eight o'clock in the morning"),
    (12, 0, "в полдень", "at noon"),
    (0, 0, "в полночь", "at midnight"),
    (13, 1, "в тринадцать ноль одна", "at one oh one in the afternoon"),  # минута: feminine
    (14, 2, "в четырнадцать ноль две", "at two oh two in the afternoon"),
    (10, 21, "в десять двадцать одна", "at ten twenty-one in the morning"),
    (17, 45, "в семнадцать сорок пять", "at five forty-five in the evening"),
    (21, 0, "в двадцать один час", "at nine o'clock in the evening"),
    (22, 0, "в двадцать два часа", "at ten o'clock at night"),
    (1, 0, "в час", "at one o'clock in the morning"),
    (1, 30, "в час тридцать", "at one thirty in the morning"),
    (20, 0, "в двадцать часов", "at eight o'clock in the evening"),
])
def test_time_of_day(hh, mm, ru, en):
    assert time_of_day(time(hh, mm)) == ru
    assert time_of_day(time(hh, mm), "en") == en


def test_noon_and_midnight_as_numbers():
    assert time_of_day(time(12, 0), named=False) == "в двенадцать часов"
    assert time_of_day(time(0, 0), named=False) == "в ноль часов"
    assert time_of_day(time(12, 0), "en", named=False) == "at twelve o'clock in the afternoon"


@pytest.mark.parametrize(("day", "ru", "en"), [
    (date(2026, 12, 5), "пятого декабря", "December fifth"),
    (date(2027, 2, 23), "двадцать третьего февраля", "February twenty-third"),
    (date(2027, 3, 8), "восьмого марта", "March eighth"),
    (date(2027, 5, 1), "первого мая", "May first"),
    (date(2027, 1, 3), "третьего января", "January third"),
    (date(2027, 8, 30), "тридцатого августа", "August thirtieth"),
    (date(2027, 10, 31), "тридцать первого октября", "October thirty-first"),
    (date(2027, 6, 12), "двенадцатого июня", "June twelfth"),
])
def test_dates(day, ru, en):
    assert date_phrase(day) == ru
    assert date_phrase(day, "en") == en


def test_dates_with_the_year():
    assert date_phrase(date(2027, 5, 1), year=True) == "первого мая две тысячи двадцать седьмого года"
    assert date_phrase(date(2000, 1, 1), year=True) == "первого января двухтысячного года"
    assert date_phrase(date(2027, 5, 1), "en", year=True) == "May first, twenty twenty-seven"


def test_long_waits_and_english_waited():
    assert expected_wait(65 * 60) == "Примерное время ожидания — один час и пять минут."
    assert expected_wait(3600, "en") == "The expected wait is about one hour."
    assert waited(3600) == "час"
    assert waited(21 * 60) == "двадцать одну минуту"
    assert waited(120, "en") == "two minutes"


def test_queue_phrases_cover_the_usual_announcements():
    ru = queue_phrases("ru")
    assert len(ru) == len(set(ru)) == 30
    assert ru[0] == "Вы первый в очереди." and "Вы третий в очереди." in ru
    assert "Примерное время ожидания — одна минута." in ru and ru[-1] == expected_wait(20 * 60)
    # Every announcement of a caller up to 10th in line and up to 20 minutes away is among them.
    assert {queue_position(p) for p in range(1, 11)} | {expected_wait(s) for s in range(1, 20 * 60 + 1, 7)} <= set(ru)
    assert queue_phrases("en", positions=2, minutes=1) == ["You are first in line.", "You are number two in line.",
                                                           "The expected wait is about one minute."]

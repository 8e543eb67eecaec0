"""Spoken yes/no at a read-back (flow/keywords.yes_no), as a small letter recogniser writes it."""

from __future__ import annotations

import pytest

from appliance.flow.keywords import yes_no


@pytest.mark.parametrize("text", ["да", "да верно", "Да, всё верно", "конечно", "даверно", "да да", "дада",
                                  "аверно", "верна", "правильна"])
def test_yes(text):
    assert yes_no(text) is True


@pytest.mark.parametrize("text", ["нет", "неверно", "нет не так", "нетнет", "нет неправильно", "неверна",
                                  "не правильно", "не верно"])
def test_no(text):
    assert yes_no(text) is False


@pytest.mark.parametrize("text", ["", "алло", "да нет", "данет", "дадим", "верность", "повторите",
                                  "наверное", "вера", "точка"])
def test_unclear(text):
    assert yes_no(text) is None

"""Caller number normalisation, withheld detection and masking."""

from __future__ import annotations

import pytest

from appliance.numbers import WITHHELD, is_withheld, mask, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+79161234567", "+79161234567"),
        ("79161234567", "+79161234567"),
        ("89161234567", "+79161234567"),
        ("9161234567", "+79161234567"),
        ("8 (916) 123-45-67", "+79161234567"),
        ("+7 (495) 123-45-67", "+74951234567"),
        ("  +7-916-123-45-67  ", "+79161234567"),
        ("sip:+79161234567@10.0.0.1:5060", "+79161234567"),
        ("<sip:89161234567@pbx.local;user=phone>", "+79161234567"),
        ("tel:+79161234567", "+79161234567"),
        ("81049301234567", "+49301234567"),  # Russian international prefix 810
        ("+4930123456", "+4930123456"),
        ("", WITHHELD),
        ("anonymous", WITHHELD),
        ("Anonymous", WITHHELD),
        ("unknown", WITHHELD),
        ("restricted", WITHHELD),
        ("PRIVATE", WITHHELD),
        ("unavailable", WITHHELD),
        ("sip:anonymous@anonymous.invalid", WITHHELD),
        ("alice", WITHHELD),  # no digits at all: nothing to call back
        ("101", "101"),  # extension
        ("112", "112"),  # short code
        ("1234567", "1234567"),  # local-only length, no area code
        ("0000000000", "0000000000"),
        ("ext-1#2", "12"),
        ("+1", "+1"),
        ("+", WITHHELD),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_other_region() -> None:
    assert normalize("030 123456", region="DE") == "+4930123456"


def test_normalize_never_raises_on_odd_input() -> None:
    for raw in (None, "\x00\x01", "++--", "9" * 40, "+" + "9" * 40, 79161234567):
        assert isinstance(normalize(raw), str)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", True),
        (WITHHELD, True),
        ("Restricted", True),
        (None, True),
        ("+79161234567", False),
        ("101", False),
    ],
)
def test_is_withheld(value: str | None, expected: bool) -> None:
    assert is_withheld(value) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+79161234567", "+7*******67"),
        ("+4930123456", "+49*******56"),
        ("+12025550123", "+1*******23"),
        ("101", "*******01"),
        ("12", "**"),
        ("+1", "+*******"),
        (WITHHELD, WITHHELD),
        ("", ""),
    ],
)
def test_mask(number: str, expected: str) -> None:
    assert mask(number) == expected


def test_mask_hides_everything_but_the_tail() -> None:
    masked = mask(normalize("89161234567"))
    assert "916" not in masked and "1234" not in masked
    assert masked.endswith("67")

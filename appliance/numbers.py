"""Caller numbers: normalise SIP user parts to E.164, recognise withheld ids, mask numbers for logs."""

from __future__ import annotations

import re

import phonenumbers

WITHHELD = "anonymous"

# Lower-cased user parts / caller ids that mean "the caller hid the number".
_WITHHELD_WORDS = frozenset(
    {"", "anonymous", "unknown", "restricted", "private", "unavailable", "withheld", "anonymous.invalid"}
)
_URI_SCHEMES = ("sips:", "sip:", "tel:")
_NOT_DIGITS = re.compile(r"[^0-9]")
_MASK_STARS = "*" * 7  # fixed width: a masked number does not reveal its length


def _strip_uri(raw: str) -> str:
    """Drop a ``sip:``/``tel:`` scheme, ``@host`` and ``;params`` if the caller left them on."""
    s = raw.strip().strip("<>").strip()
    low = s.lower()
    for scheme in _URI_SCHEMES:
        if low.startswith(scheme):
            s = s[len(scheme) :]
            break
    return s.split("@", 1)[0].split(";", 1)[0].strip()


def _clean(s: str) -> str:
    """Digits only, keeping one leading ``+``."""
    digits = _NOT_DIGITS.sub("", s)
    return ("+" + digits) if s.startswith("+") and digits else digits


def is_withheld(n: str | None) -> bool:
    """True if ``n`` is a withheld / anonymous caller id (raw or normalised)."""
    if n is None:
        return True
    return _strip_uri(str(n)).lower() in _WITHHELD_WORDS


def normalize(raw: str, region: str = "RU") -> str:
    """Turn a SIP user part or caller id into E.164 (``+79161234567``); never raises.

    Withheld ids become :data:`WITHHELD`. Anything that is not a possible phone number for ``region``
    (an extension like ``101``, a short code, garbage) is returned cleaned: digits with a leading ``+``
    if it had one. A value with no digits at all (``alice``) has no number to call back and becomes
    :data:`WITHHELD` too.
    """
    if raw is None or is_withheld(raw):
        return WITHHELD
    s = _strip_uri(str(raw))
    cleaned = _clean(s)
    if not cleaned or cleaned == "+":
        return WITHHELD
    try:
        num = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException:
        return cleaned
    # IS_POSSIBLE only: "local only" lengths (7-digit numbers without area code) are not E.164-able.
    reason = phonenumbers.is_possible_number_with_reason(num)
    if num.national_number == 0 or reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return cleaned
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def mask(number: str) -> str:
    """Mask a number for logs above DEBUG: ``+79161234567`` -> ``+7*******67``.

    Keeps the country code and the last two digits, with a fixed-width run of stars. Other strings keep
    their last two characters; :data:`WITHHELD` and the empty string are returned as they are.
    """
    if not number or number == WITHHELD:
        return number
    s = str(number)
    if s.startswith("+"):
        prefix = "+"
        try:
            prefix = f"+{phonenumbers.parse(s, None).country_code}"
        except phonenumbers.NumberParseException:
            pass
        return prefix + _MASK_STARS + s[-2:] if len(s) > len(prefix) + 2 else prefix + _MASK_STARS
    if len(s) <= 2:
        return "*" * len(s)
    return _MASK_STARS + s[-2:]

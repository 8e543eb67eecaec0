"""Pure helpers that pull caller/called identities out of a raw SIP INVITE (no pjsua2 here)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_URI_USER = re.compile(r"<?\s*(?:sips?|tel):([^@;>\s]+)", re.IGNORECASE)
_DISPLAY = re.compile(r'^\s*"([^"]*)"|^\s*([^<"]+?)\s*<')
_COMPACT = {"f": "from", "t": "to", "i": "call-id"}


@dataclass(frozen=True, slots=True)
class InviteIdentity:
    request_user: str
    from_user: str
    from_name: str
    asserted_user: str  # P-Asserted-Identity, what trunks use for the real caller id
    privacy: bool  # "Privacy: id" asks us to treat the number as withheld
    call_id: str

    @property
    def caller(self) -> str:
        if self.privacy:
            return "anonymous"
        return self.asserted_user or self.from_user


def uri_user(value: str) -> str:
    """The user part of the first SIP/TEL URI in a header value ('' when there is none)."""
    match = _URI_USER.search(value)
    if not match:
        return ""
    user = match.group(1)
    if ":" in user:  # sip:user:password@host, never seen from gateways but legal
        user = user.split(":", 1)[0]
    return user


def display_name(value: str) -> str:
    match = _DISPLAY.search(value)
    if not match:
        return ""
    return (match.group(1) or match.group(2) or "").strip()


def parse_invite(whole_msg: str) -> InviteIdentity:
    """Parse what we need from an INVITE. Tolerant: malformed parts give empty strings, never errors."""
    lines = whole_msg.replace("\r\n", "\n").split("\n")
    request_user = ""
    if lines and lines[0].upper().startswith("INVITE "):
        parts = lines[0].split()
        if len(parts) >= 2:
            request_user = uri_user(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line.strip():
            break  # end of headers; the body (SDP) follows
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, value.strip())
    from_value = headers.get("from", "")
    privacy = "id" in [p.strip().lower() for p in headers.get("privacy", "").split(";")]
    return InviteIdentity(
        request_user=request_user,
        from_user=uri_user(from_value),
        from_name=display_name(from_value),
        asserted_user=uri_user(headers.get("p-asserted-identity", "")),
        privacy=privacy,
        call_id=headers.get("call-id", ""),
    )

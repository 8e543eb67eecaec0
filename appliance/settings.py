"""Box settings: one YAML file loaded into a frozen, validated tree; every error names file:line and key."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import yaml

from appliance.errors import ConfigError, located

EXAMPLE = "image/registratura.example.yaml"
CODECS = ("PCMA", "PCMU", "G722")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def split_host_port(text: str) -> tuple[str, int]:
    """'0.0.0.0:5060' or '[::1]:5060' -> (host, port); ValueError unless an IP literal and a port 1-65535."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        ipaddress.IPv6Address(host)
    else:
        # A bare IPv6 address has colons of its own, so without brackets only IPv4 is unambiguous.
        host, sep, port = text.rpartition(":")
        ipaddress.IPv4Address(host)
    if not sep or not re.fullmatch(r"\d{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(text)
    return host, int(port)


class _Endpoint:
    """Shared by sections with ``listen`` and ``allow_from``."""

    listen: str
    allow_from: tuple[str, ...]

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]

    @property
    def allow_networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_from)

    def allows(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return False
        # Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; match them against IPv4 rules too.
        mapped = getattr(addr, "ipv4_mapped", None)
        return any(addr in net or (mapped is not None and mapped in net) for net in self.allow_networks)


@dataclass(frozen=True)
class ClinicSettings:
    name: str = "Клиника"
    region: str = "RU"
    language: str = "ru"
    timezone: str = "Europe/Moscow"
    hours: Any = None  # opening hours for callbacks and reports ({mon-fri: "08:00-20:00"}); None = always

    def is_open(self, now: Any) -> bool:
        if self.hours is None:
            return True
        from appliance.flow.conditions import in_hours

        return in_hours(self.hours, now, self.region)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Registration:
    registrar: str
    user: str
    password: str = field(repr=False)  # never in logs
    realm: str = "*"
    expires: int = 300


@dataclass(frozen=True)
class DtmfSettings:
    interdigit_timeout: float = 3.0


@dataclass(frozen=True)
class SipSettings(_Endpoint):
    listen: str = "0.0.0.0:5060"
    public_address: str | None = None
    allow_from: tuple[str, ...] = ("127.0.0.1/32",)
    codecs: tuple[str, ...] = CODECS
    rtp_ports: str = "20000-20999"
    max_calls: int = 128  # what we ask the stack for; the build may allow fewer
    registration: Registration | None = None
    dtmf: DtmfSettings = field(default_factory=DtmfSettings)
    outbound: str | None = None  # route for callbacks: "sip:{national}@192.168.1.1" ({number}, {digits} too)

    @property
    def rtp_port_min(self) -> int:
        return int(self.rtp_ports.split("-")[0])

    @property
    def rtp_port_max(self) -> int:
        return int(self.rtp_ports.split("-")[1])


@dataclass(frozen=True)
class FlowSettings:
    dir: Path = Path("ivr_flows")
    main: str = "clinic_ru"


@dataclass(frozen=True)
class VoiceSettings:
    dir: Path = Path("voices")
    cache: Path | None = None  # rendered prompts; None = <data_dir>/prompt-cache (tests share one)


@dataclass(frozen=True)
class BasicAuth:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class MetricsSettings(_Endpoint):
    listen: str = "127.0.0.1:9310"
    allow_from: tuple[str, ...] = ()  # empty = any address
    basic_auth: BasicAuth | None = None

    def allows(self, ip: str) -> bool:
        return not self.allow_from or super().allows(ip)


@dataclass(frozen=True)
class RecordingSettings:
    mode: str = "all"
    format: str = "mixed"
    retention_days: int = 90  # recordings older than this are deleted (legal holds excepted); 0 = keep
    max_disk_mb: int = 0  # recordings above this size are deleted oldest first; 0 = no cap
    min_free_mb: int = 200  # below this much free space: oldest deleted first, then recording stops
    seal_public_key: Path | None = None  # encrypt each recording for this X25519 key after the call


@dataclass(frozen=True)
class SilenceSettings:
    no_input_timeout: float = 6.0
    retries: int = 2
    dead_line_timeout: float = 120.0  # long: a caller may listen in silence; gateways that send digital silence exist
    vad: str = "auto"  # auto: Silero when installed (up to 64 calls), else energy; energy: always (cheapest)
    asr: str = "auto"  # auto: spoken menu choices and digits when a recogniser is installed (needs the model VAD); off


@dataclass(frozen=True)
class AutoBlockSettings:
    calls: int = 0  # this many calls from one number within `minutes` block it; 0 = off
    minutes: float = 10.0
    block_minutes: float = 60.0  # doubles on every repeat, up to a week


@dataclass(frozen=True)
class AbuseSettings:
    marks: int = 2  # receptionist marks (*9) within `days` that block the number
    days: float = 30.0


@dataclass(frozen=True)
class FeatureCodes:
    """Keys a receptionist presses during a connected call; quoted in YAML ("*9"), since * and # mean YAML syntax."""

    abusive: str = "*9"  # marks the caller abusive (`security.abuse` marks block the number)
    threat: str = "*0"  # marks the call a threat: legal hold on the recording, metric, alert, webhook

    def by_code(self) -> dict[str, str]:
        return {self.abusive: "abusive", self.threat: "threat"}

    def longest(self) -> int:
        return max(len(self.abusive), len(self.threat))


@dataclass(frozen=True)
class SecuritySettings:
    withheld: str = "allow"  # allow | ask (type a number first) | block: callers who hide their number
    never_block: tuple[str, ...] = ()  # numbers/prefixes never blocked (ambulance dispatch, staff, partners)
    auto_block: AutoBlockSettings = field(default_factory=AutoBlockSettings)
    abuse: AbuseSettings = field(default_factory=AbuseSettings)
    threat_webhook: str | None = None  # POSTed JSON when a receptionist marks a threat (*0)
    feature_codes: FeatureCodes = field(default_factory=FeatureCodes)


@dataclass(frozen=True)
class QueueCallbackSettings:
    on_abandon: bool = True  # call back a caller who hung up in the queue...
    abandon_after: float = 10.0  # ...after waiting more than this many seconds
    window_hours: float = 4.0  # at most one automatic callback per number in this many hours
    max_attempts: int = 3  # unanswered calls to the patient before the dialer gives up


@dataclass(frozen=True)
class QueueSettings:
    agents: tuple[str, ...] = ()  # receptionists' phones: "sip:101@192.168.1.21"
    strategy: str = "longest_idle"
    max_wait: float = 60.0  # seconds before the callback offer
    service_level: float = 20.0  # the "20" of SL 80/20
    ring_timeout: float = 15.0
    wrapup: float = 10.0
    announce_every: float = 30.0
    max_missed: int = 3
    callback: QueueCallbackSettings = field(default_factory=QueueCallbackSettings)


@dataclass(frozen=True)
class BackupSettings:
    dir: Path | None = None  # where `registratura backup` writes; None = <data_dir>/backups
    keep: int = 7  # newest archives kept there (of this box); older ones are deleted
    recordings: bool = False  # put the call recordings (legal holds included) into the archive too


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"


@dataclass(frozen=True)
class Settings:
    clinic: ClinicSettings = field(default_factory=ClinicSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    data_dir: Path = Path("/var/lib/registratura")
    flows: FlowSettings = field(default_factory=FlowSettings)
    voices: VoiceSettings = field(default_factory=VoiceSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    silence: SilenceSettings = field(default_factory=SilenceSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    queues: Mapping[str, QueueSettings] = field(default_factory=dict)
    transfers: Mapping[str, str] = field(default_factory=dict)  # flow target name -> SIP URI
    backup: BackupSettings = field(default_factory=BackupSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "<built-in>"  # where it was loaded from; not a YAML key


# ---- value parsers: return the clean value or raise _Bad(what is wrong, what is allowed) ----

KeyPath = tuple[str | int, ...]


class _Bad(Exception):
    def __init__(self, what: str, allowed: str, item: int | None = None) -> None:
        super().__init__(what)
        self.what, self.allowed, self.item = what, allowed, item


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "text", list: "a list",
          tuple: "a list", dict: "a mapping", type(None): "empty"}


def _is(v: Any) -> str:
    """'12' is text / 12 is an integer: what YAML made of the value."""
    text = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
    return f"{text} is {_KINDS.get(type(v), type(v).__name__)}"


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"{_is(v)}, not text", "put the value in quotes")
    if not v.strip():
        raise _Bad("is empty", "give a value or remove the key")
    return v


def _choice(*options: str) -> Callable[[Any], str]:
    canon = {o.lower(): o for o in options}

    def parse(v: Any) -> str:
        s = _text(v).strip()
        if s.lower() not in canon:
            raise _Bad(f"'{s}' is not allowed", "use one of: " + ", ".join(options))
        return canon[s.lower()]
    return parse


def _number(lo: float, hi: float, whole: bool = False) -> Callable[[Any], Any]:
    kind, allowed = ("an integer", f"a whole number {lo}..{hi}") if whole else ("a number", f"{lo}..{hi} s")

    def parse(v: Any) -> Any:
        # YAML types matter: "12" in quotes is text, and yes/no are booleans, not numbers.
        if isinstance(v, bool) or not isinstance(v, int if whole else int | float):
            raise _Bad(f"{_is(v)}, not {kind}", f"use {allowed} without quotes")
        if not lo <= v <= hi:  # also rejects .nan
            raise _Bad(f"{v} is out of range", f"use {allowed}")
        return v if whole else float(v)
    return parse


def _conv(convert: Callable[[str], Any], what: str, allowed: str) -> Callable[[Any], Any]:
    """A parser from a converter that raises ValueError (or LookupError) on bad text."""
    def parse(v: Any) -> Any:
        s = _text(v).strip()
        try:
            return convert(s)
        except (ValueError, LookupError, OSError):
            raise _Bad(f"'{s}' {what}", allowed) from None
    return parse


def _must(ok: Any, s: str) -> str:
    if not ok:
        raise ValueError(s)
    return s


def _host_port(example: str) -> Callable[[Any], str]:
    def norm(s: str) -> str:
        host, port = split_host_port(s)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return _conv(norm, "is not host:port", f'use e.g. "{example}"')


_ip = _conv(lambda s: str(ipaddress.ip_address(s)), "is not an IP address", 'use e.g. "192.168.1.10"')
_timezone = _conv(lambda s: ZoneInfo(s) and s, "is not a known time zone", 'use e.g. "Europe/Moscow"')
# phonenumbers parses callers' numbers with this region, so it must be one it knows.
_region = _conv(lambda s: _must(s.upper() in phonenumbers.SUPPORTED_REGIONS, s.upper()),
                "is not an ISO country code", 'use two letters, e.g. "RU"')
_flow_name = _conv(lambda s: _must(re.fullmatch(r"[A-Za-z0-9_-]+", s), s),
                   "is not a flow name", "use the flow file name without .yaml, e.g. clinic_ru")
_URI = re.compile(r"sip:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?")
_registrar = _conv(lambda s: _must((m := _URI.fullmatch(s)) and 0 < int(m[2] or 5060) < 65536, s),
                   "is not a SIP URI", 'use "sip:host[:port]", e.g. "sip:192.168.1.1:5060"')


def _list(v: Any, example: str) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise _Bad(f"{_is(v)}, not a list", f"use a list, e.g. {example}")
    return list(v)


def _networks(v: Any) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_list(v, '["10.0.0.0/8", "10.0.0.5"]')):
        try:
            out.append(str(ipaddress.ip_network(_text(item).strip(), strict=False)))
        except (ValueError, _Bad):
            raise _Bad(f"{item!r} is not an IP or CIDR", 'use e.g. "10.0.0.0/8" or "10.0.0.5"', i) from None
    return tuple(out)


def _sip_networks(v: Any) -> tuple[str, ...]:
    nets = _networks(v)
    if not nets:  # an empty list would silently refuse every call
        raise _Bad("is empty", 'list at least one IP or CIDR ("0.0.0.0/0" allows any)')
    return nets


def _codecs(v: Any) -> tuple[str, ...]:
    items = _list(v, "[PCMA, PCMU, G722]")
    if not items:
        raise _Bad("is empty", "list at least one of: " + ", ".join(CODECS))
    out: list[str] = []
    for i, item in enumerate(items):
        try:
            name = _choice(*CODECS)(item)
        except _Bad as bad:
            raise _Bad(bad.what, bad.allowed, i) from None
        if name in out:
            raise _Bad(f"'{name}' is listed twice", "list each codec once", i)
        out.append(name)
    return tuple(out)


def _rtp_ports(v: Any) -> str:
    s = _text(v).strip()
    allowed = 'use "start-end": even start below end, both 1024..65535, e.g. "20000-20999"'
    m = re.fullmatch(r"(\d{1,5})\s*-\s*(\d{1,5})", s)
    if not m:
        raise _Bad(f"'{s}' is not start-end", allowed)
    lo, hi = int(m[1]), int(m[2])
    if not (1024 <= lo <= 65535 and 1024 <= hi <= 65535):
        raise _Bad(f"'{s}' is outside 1024..65535", allowed)
    if lo >= hi:
        raise _Bad(f"'{s}' does not go up", allowed)
    if lo % 2:  # RTP takes the even port, RTCP the odd one above it
        raise _Bad(f"'{s}' starts on an odd port", allowed)
    return f"{lo}-{hi}"


# ---- the walk: sections with known keys, defaults for absent or empty values, errors collected ----

def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "settings"


class _Checker:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source, self.base_dir = source, base_dir
        self.lines: dict[KeyPath, int] = {}  # filled by plain(); empty for in-memory mappings
        self.loader = yaml.SafeLoader("")  # only its constructor is used, for scalars
        self.errors: list[tuple[int, str, str]] = []  # (line or 0, code, one-line message)

    def error(self, path: KeyPath, what: str, allowed: str, code: str = "E104") -> None:
        near = path
        while near and near not in self.lines:  # a missing key has no line: point at its parent
            near = near[:-1]
        line = self.lines.get(near)
        message = located(self.source, line, f"{_dotted(path)}: {what}; {allowed}")
        self.errors.append((line or 0, code, message))

    def dir(self, v: Any) -> Path:
        # Relative to the settings file, so a box config directory is self-contained; mappings may hold Paths.
        p = Path(v) if isinstance(v, os.PathLike) else Path(_text(v).strip())
        return Path(os.path.abspath(self.base_dir / p.expanduser()))

    def make(self, cls: type, raw: Any, path: KeyPath) -> Any:
        """Build one section; field defaults fill the gaps, fields without a default are required."""
        schema = _SCHEMA[cls]
        keys = list(schema)
        if raw is not None and not isinstance(raw, Mapping):
            self.error(path, f"{_is(raw)}, not a mapping", "allowed: " + ", ".join(keys))
            return None
        raw = raw or {}
        for key in raw:
            if key not in schema:
                close = difflib.get_close_matches(str(key), keys, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.error(path + (key,), f"unknown key{hint}", "allowed: " + ", ".join(keys), "E103")
        values = {}
        for f in fields(cls):
            if f.name not in schema:
                continue
            parse, value, at = schema[f.name], raw.get(f.name), path + (f.name,)
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if default is MISSING and value is None:
                self.error(at, "missing required key", f"add {f.name}: under {_dotted(path)}", "E105")
            elif isinstance(parse, _Named):
                values[f.name] = self.named(parse.cls, value, at)
                continue
            elif isinstance(parse, type) and is_dataclass(parse):  # sub-section; optional ones stay None
                values[f.name] = None if value is None and default is None else self.make(parse, value, at)
                continue
            elif parse is Path:
                parse, default = self.dir, None if default is None else self.dir(str(default))
            values[f.name] = default if value is None else self.parse(parse, value, at, default)
        return cls(**values)

    def named(self, cls: type, raw: Any, path: KeyPath) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.error(path, f"{_is(raw)}, not a mapping", "use names as keys, e.g. reception: {agents: [...]}")
            return {}
        out = {}
        for name, section in raw.items():
            if not _NAME.match(str(name)):
                self.error(path + (name,), "not a plain name", "use lowercase letters, digits and _")
                continue
            out[str(name)] = self.make(cls, section or {}, path + (name,))
        return out

    def plain(self, node: yaml.Node, path: KeyPath = ()) -> Any:
        """Turn a composed node into plain values, noting the 1-based line of every key and list item."""
        if len(path) > 16:  # our schema is 4 deep; this stops recursive aliases
            self.error(path, "nested too deep", "remove the recursive alias")
            return None
        self.lines.setdefault(path, node.start_mark.line + 1)  # the root; keys and items are noted below
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                key = knode.value if isinstance(knode, yaml.ScalarNode) else "<complex key>"
                self.lines[path + (key,)] = knode.start_mark.line + 1
                if key in out:  # PyYAML keeps the last one silently; say so instead
                    self.error(path + (key,), "duplicate key", "keep only one", "E103")
                out[key] = self.plain(vnode, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
            return [self.plain(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def parse(self, parse: Callable[[Any], Any], value: Any, path: KeyPath, default: Any) -> Any:
        try:
            return parse(value)
        except _Bad as bad:
            what = bad.what
            if path and path[-1] == "password":  # errors reach the journal and /healthz: never the secret itself
                what = what.replace(_is(value).rsplit(" is ", 1)[0], "the value (not shown)")
            self.error(path + (() if bad.item is None else (bad.item,)), what, bad.allowed)
            return default


def _patterns(v: Any) -> tuple[str, ...]:
    from appliance.security.blocklist import normalise_pattern

    out = []
    for i, item in enumerate(_list(v, '["+79161234567", "+7495*"]')):
        try:
            out.append(normalise_pattern(str(item)))
        except ValueError as exc:
            raise _Bad(str(exc), "numbers with the country code, or prefixes ending in *", item=i) from None
    return tuple(out)


_SIP_URI = re.compile(r"^sips?:[^@\s]+@[^@\s]+$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class _Named:
    """A mapping of technician-chosen names to sections of one kind (queues: {reception: {...}})."""

    def __init__(self, cls: type) -> None:
        self.cls = cls


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"{_is(v)}, not true/false", "use true or false without quotes")
    return v


def _sip_uri(v: Any) -> str:
    text = _text(v).strip()
    if not _SIP_URI.match(text):
        raise _Bad(f"'{text}' is not a SIP URI", 'use e.g. "sip:101@192.168.1.21"')
    return text


def check_sip_uri(v: Any) -> str:
    """A SIP URI typed on the command line (receptionists' phones): the URI, or ConfigError saying the fix."""
    try:
        return _sip_uri(v)
    except _Bad as bad:
        raise ConfigError(f"{bad.what}; {bad.allowed}", code="E130") from None


def _url(v: Any) -> str:
    text = _text(v).strip()
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", text):
        raise _Bad(f"'{text}' is not an http(s) URL", 'use e.g. "https://security.clinic.local/hooks/threat"')
    return text


def _feature_code(v: Any) -> str:
    text = _text(v).strip()
    if not re.fullmatch(r"[*#][0-9]{1,3}", text):
        raise _Bad(f"'{text}' is not a feature code", 'use * or # and one to three digits, in quotes, e.g. "*9"')
    return text


def _outbound(v: Any) -> str:
    text = _text(v).strip()
    if not re.match(r"^sips?:\{(number|digits|national)\}@[^@\s]+$", text):
        raise _Bad(f"'{text}' is not an outbound route",
                   'use e.g. "sip:{national}@192.168.1.1" ({number} = +7916..., {digits} = 7916..., '
                   '{national} = 8916...)')
    return text


def _agents(v: Any) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_list(v, '["sip:101@192.168.1.21"]')):
        try:
            out.append(_sip_uri(item))
        except _Bad as bad:
            raise _Bad(bad.what, bad.allowed, item=i) from None
    if len(set(out)) != len(out):
        raise _Bad("the same phone is listed twice", "list each receptionist's phone once")
    return tuple(out)


def _transfers(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping):
        raise _Bad(f"{_is(v)}, not a mapping", 'use e.g. {head_doctor: "sip:200@192.168.1.30"}')
    out = {}
    for name, uri in v.items():
        if not _NAME.match(str(name)):
            raise _Bad(f"'{name}' is not a plain name", "use lowercase letters, digits and _ (flows refer to it)")
        out[str(name)] = _sip_uri(uri)
    return out


def _hours(v: Any) -> Any:
    from appliance.flow.conditions import ConditionError, parse_condition

    try:
        return parse_condition("hours", v)
    except ConditionError as exc:
        raise _Bad(exc.problem, exc.fix) from None


# Which parser checks each key; a dataclass means a sub-section, Path a directory relative to the file.
_SCHEMA: dict[type, dict[str, Any]] = {
    Settings: {"clinic": ClinicSettings, "sip": SipSettings, "data_dir": Path, "flows": FlowSettings,
               "voices": VoiceSettings, "metrics": MetricsSettings, "recording": RecordingSettings,
               "silence": SilenceSettings, "security": SecuritySettings, "queues": _Named(QueueSettings),
               "transfers": _transfers, "backup": BackupSettings, "log": LogSettings},
    ClinicSettings: {"name": _text, "region": _region, "language": _choice("ru", "en"),
                     "timezone": _timezone, "hours": _hours},
    QueueSettings: {"agents": _agents, "strategy": _choice("ring_all", "longest_idle", "round_robin", "fewest_calls"),
                    "max_wait": _number(0, 3600), "service_level": _number(1, 600),
                    "ring_timeout": _number(3, 120), "wrapup": _number(0, 600), "announce_every": _number(0, 600),
                    "max_missed": _number(0, 100, whole=True), "callback": QueueCallbackSettings},
    QueueCallbackSettings: {"on_abandon": _bool, "abandon_after": _number(0, 3600),
                            "window_hours": _number(0, 168), "max_attempts": _number(1, 20, whole=True)},
    SipSettings: {"listen": _host_port("0.0.0.0:5060"), "public_address": _ip, "allow_from": _sip_networks,
                  "codecs": _codecs, "rtp_ports": _rtp_ports, "max_calls": _number(1, 1024, whole=True),
                  "registration": Registration, "dtmf": DtmfSettings, "outbound": _outbound},
    Registration: {"registrar": _registrar, "user": _text, "password": _text, "realm": _text,
                   "expires": _number(60, 86400, whole=True)},
    DtmfSettings: {"interdigit_timeout": _number(0.5, 60)},
    FlowSettings: {"dir": Path, "main": _flow_name},
    VoiceSettings: {"dir": Path, "cache": Path},
    MetricsSettings: {"listen": _host_port("127.0.0.1:9310"), "allow_from": _networks,
                      "basic_auth": BasicAuth},
    BasicAuth: {"user": _text, "password": _text},
    RecordingSettings: {"mode": _choice("all", "queue", "none"), "format": _choice("mixed", "stereo"),
                        "retention_days": _number(0, 3650, whole=True), "max_disk_mb": _number(0, 10**8, whole=True),
                        "min_free_mb": _number(0, 10**6, whole=True), "seal_public_key": Path},
    SilenceSettings: {"no_input_timeout": _number(1, 120), "retries": _number(0, 10, whole=True),
                      "dead_line_timeout": _number(5, 3600), "vad": _choice("auto", "energy"),
                      "asr": _choice("auto", "off")},
    SecuritySettings: {"withheld": _choice("allow", "ask", "block"), "never_block": _patterns,
                       "auto_block": AutoBlockSettings, "abuse": AbuseSettings, "threat_webhook": _url,
                       "feature_codes": FeatureCodes},
    FeatureCodes: {"abusive": _feature_code, "threat": _feature_code},
    AutoBlockSettings: {"calls": _number(0, 100, whole=True), "minutes": _number(1, 1440),
                        "block_minutes": _number(1, 10080)},
    AbuseSettings: {"marks": _number(0, 10, whole=True), "days": _number(1, 365)},
    BackupSettings: {"dir": Path, "keep": _number(1, 1000, whole=True), "recordings": _bool},
    LogSettings: {"level": _choice("DEBUG", "INFO", "WARNING", "ERROR")},
}


def _build(data: Any, c: _Checker) -> Settings:
    settings = c.make(Settings, data, ())
    if settings is not None and settings.sip is not None:
        sip = settings.sip
        # Each call holds an RTP+RTCP port pair, so a narrow range caps calls below max_calls.
        pairs = (sip.rtp_port_max - sip.rtp_port_min + 1) // 2
        if pairs < sip.max_calls:
            c.error(("sip", "rtp_ports"), f"'{sip.rtp_ports}' fits {pairs} calls, not {sip.max_calls}",
                    f"give at least {2 * sip.max_calls} ports or lower max_calls")
    codes = getattr(getattr(settings, "security", None), "feature_codes", None)
    if codes is not None and codes.abusive == codes.threat:
        c.error(("security", "feature_codes", "threat"), f"'{codes.threat}' is the abusive code too",
                "give each mark its own code (defaults: abusive \"*9\", threat \"*0\")")
    if c.errors:
        c.errors.sort(key=lambda e: e[0])  # file order, so the first line is the first problem in the file
        raise ConfigError("\n".join(msg for _, _, msg in c.errors), code=c.errors[0][1])
    return replace(settings, source=c.source)


def settings_from_mapping(data: Mapping[str, Any], base_dir: Path, source: str = "<built-in>") -> Settings:
    """Validate an in-memory mapping (tests, the built-in demo) exactly like a file, without line numbers."""
    return _build(data, _Checker(source, Path(base_dir).absolute()))


def load_settings(path: str | Path) -> Settings:
    """Load and validate the box settings file; raise ConfigError listing every problem, one per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found; pass --config or create it (see {EXAMPLE})",
                          code="E101") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start}); save it as UTF-8", code="E102") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings file ({exc.strerror}); check path and permissions",
                          code="E101") from None
    c = _Checker(str(path), path.parent.absolute())
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = None if node is None else c.plain(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = f"invalid YAML: {exc.problem or exc.context}"
        if "undefined alias" in str(exc.problem):  # `abusive: *9`: YAML reads * as an alias
            what += ' (a value starting with * must be quoted, e.g. "*9")'
        if exc.context and exc.problem and exc.context_mark:
            what += f" ({exc.context} at line {exc.context_mark.line + 1})"
        line, where = (mark.line + 1, f" at column {mark.column + 1}") if mark else (None, "")
        raise ConfigError(located(path, line, f"{what}; fix the syntax{where}"), code="E102") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}; fix the syntax", code="E102") from None
    _commented_codes(c, data, text.splitlines())
    return _build(data, c)


def _commented_codes(c: _Checker, data: Any, lines: list[str]) -> None:
    """`threat: #5` unquoted is a YAML comment, so the default would apply silently: say so instead."""
    section = data.get("security") if isinstance(data, Mapping) else None
    codes = section.get("feature_codes") if isinstance(section, Mapping) else None
    if not isinstance(codes, Mapping):
        return
    for key in ("abusive", "threat"):
        at = ("security", "feature_codes", key)
        line = c.lines.get(at)
        if key in codes and codes[key] is None and line and re.search(rf"{key}\s*:\s+#", lines[line - 1]):
            c.error(at, "the value after # is read as a YAML comment", 'quote the code, e.g. "#5"')

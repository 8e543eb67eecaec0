"""Settings file loading: defaults, path resolution and one-line file:line errors."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.settings import (
    BasicAuth,
    Registration,
    Settings,
    load_settings,
    settings_from_mapping,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "image" / "registratura.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registratura.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value


def message(error: ConfigError) -> str:
    """The message without the E-code prefix that str() adds."""
    return error.args[0]


def short(error: ConfigError, tmp_path: Path) -> str:
    """The message with the settings file written by write() shown as F."""
    return message(error).replace(str(tmp_path / "registratura.yaml"), "F")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing set\n")
    s = load_settings(path)
    assert s.clinic.name == "Клиника"
    assert (s.clinic.region, s.clinic.language, s.clinic.timezone) == ("RU", "ru", "Europe/Moscow")
    assert s.clinic.tz.key == "Europe/Moscow"
    assert (s.sip.host, s.sip.port) == ("0.0.0.0", 5060)
    assert s.sip.public_address is None
    assert s.sip.allow_from == ("127.0.0.1/32",)
    assert s.sip.codecs == ("PCMA", "PCMU", "G722")
    assert (s.sip.rtp_port_min, s.sip.rtp_port_max) == (20000, 20999)
    assert s.sip.max_calls == 128
    assert s.sip.registration is None
    assert s.sip.dtmf.interdigit_timeout == 3.0
    assert s.data_dir == Path("/var/lib/registratura")
    assert s.flows.main == "clinic_ru"
    assert s.voices.cache is None
    assert (s.metrics.host, s.metrics.port, s.metrics.allow_from) == ("127.0.0.1", 9310, ())
    assert s.metrics.basic_auth is None
    assert (s.recording.mode, s.recording.format) == ("all", "mixed")
    assert (s.silence.no_input_timeout, s.silence.retries, s.silence.dead_line_timeout) == (6.0, 2, 120.0)
    assert s.log.level == "INFO"
    assert s.source == str(path)


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "clinic:\nsip:\n  public_address:\nmetrics: {}\n"))
    assert s.sip == settings_from_mapping({}, tmp_path).sip


def test_relative_paths_resolve_against_the_settings_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    path = conf / "box.yaml"
    path.write_text("data_dir: ../data\nflows: {dir: my_flows, main: night}\n"
                    "voices: {dir: /opt/voices, cache: c}\n")
    s = load_settings(path)
    assert s.data_dir == tmp_path / "data"
    assert s.flows.dir == conf / "my_flows"
    assert s.flows.main == "night"
    assert s.voices.dir == Path("/opt/voices")
    assert s.voices.cache == conf / "c"
    assert s.flows.dir.is_absolute()


def test_default_dirs_resolve_too(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "{}\n"))
    assert (s.flows.dir, s.voices.dir) == (tmp_path / "ivr_flows", tmp_path / "voices")


def test_values_are_normalised(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, """\
clinic: {region: by, language: EN}
sip:
  listen: "[::]:5070"
  public_address: "203.0.113.7"
  allow_from: ["10.0.0.5", "192.168.1.7/24", "::1"]
  codecs: [g722, pcma]
  rtp_ports: "30000-30999"
  max_calls: 4
  dtmf: {interdigit_timeout: 2}
log: {level: debug}
"""))
    assert (s.clinic.region, s.clinic.language) == ("BY", "en")
    assert (s.sip.listen, s.sip.host, s.sip.port) == ("[::]:5070", "::", 5070)
    assert s.sip.allow_from == ("10.0.0.5/32", "192.168.1.0/24", "::1/128")
    assert s.sip.allow_networks[1] == ipaddress.ip_network("192.168.1.0/24")
    assert s.sip.codecs == ("G722", "PCMA")
    assert s.sip.dtmf.interdigit_timeout == 2.0
    assert s.log.level == "DEBUG"


def test_allows(tmp_path: Path) -> None:
    s = settings_from_mapping({"sip": {"allow_from": ["10.0.0.0/8"]}, "metrics": {}}, tmp_path)
    assert s.sip.allows("10.1.2.3")
    assert s.sip.allows("::ffff:10.1.2.3")  # dual-stack socket view of an IPv4 peer
    assert not s.sip.allows("192.168.0.1")
    assert not s.sip.allows("not-an-ip")
    assert s.metrics.allows("8.8.8.8")  # empty = any
    locked = settings_from_mapping({"metrics": {"allow_from": ["127.0.0.1"]}}, tmp_path)
    assert locked.metrics.allows("127.0.0.1") and not locked.metrics.allows("10.0.0.1")


def test_registration_and_basic_auth(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, """\
sip:
  registration: {registrar: "sip:pbx.local:5080", user: box, password: "1234"}
metrics:
  basic_auth: {user: prom, password: s3cret}
"""))
    assert s.sip.registration == Registration("sip:pbx.local:5080", "box", "1234", "*", 300)
    assert s.metrics.basic_auth == BasicAuth("prom", "s3cret")
    assert "1234" not in repr(s) and "s3cret" not in repr(s)  # passwords stay out of logs


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = settings_from_mapping({}, tmp_path)
    assert isinstance(s, Settings)
    with pytest.raises(AttributeError):
        s.sip.max_calls = 4  # type: ignore[misc]


def test_unknown_key_names_line_and_suggestion(tmp_path: Path) -> None:
    error = load_error(tmp_path, "clinic:\n  name: X\n\nsip:\n  codecs: [PCMA]\n\n  lisen: '0.0.0.0:5060'\n")
    assert error.code == "E103"
    assert message(error) == (
        f"{tmp_path / 'registratura.yaml'}:7: sip.lisen: unknown key (did you mean 'listen'?); "
        "allowed: listen, public_address, allow_from, codecs, rtp_ports, max_calls, registration, dtmf, outbound"
    )
    assert str(error).startswith("E103: ")


def test_unknown_top_level_key_without_suggestion(tmp_path: Path) -> None:
    error = load_error(tmp_path, "zzz: 1\n")
    assert short(error, tmp_path).startswith("F:1: zzz: unknown key; allowed: clinic, sip,")


def test_bad_listen_address(tmp_path: Path) -> None:
    error = load_error(tmp_path, "# box\nclinic: {}\n\nsip:\n  listen: '1.2.3:99999'\n")
    assert error.code == "E104"
    assert message(error) == (
        f"{tmp_path / 'registratura.yaml'}:5: sip.listen: '1.2.3:99999' is not host:port; "
        'use e.g. "0.0.0.0:5060"'
    )


@pytest.mark.parametrize("listen", ["localhost:5060", "0.0.0.0", "0.0.0.0:0", "::1:5060", "[::1]", "1.2.3:x"])
def test_listen_needs_ip_literal_and_port(tmp_path: Path, listen: str) -> None:
    error = load_error(tmp_path, f"metrics:\n  listen: '{listen}'\n")
    expected = f"F:2: metrics.listen: '{listen}' is not host:port; use e.g. \"127.0.0.1:9310\""
    assert short(error, tmp_path) == expected


def test_bad_cidr_points_at_the_list_item(tmp_path: Path) -> None:
    error = load_error(tmp_path, "sip:\n  allow_from:\n    - 10.0.0.0/8\n    - 10.0.0.300/24\n")
    assert message(error) == (
        f"{tmp_path / 'registratura.yaml'}:4: sip.allow_from[1]: '10.0.0.300/24' is not an IP or CIDR; "
        'use e.g. "10.0.0.0/8" or "10.0.0.5"'
    )


def test_empty_sip_allow_from_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "sip:\n  allow_from: []\n")
    assert short(error, tmp_path) == (
        'F:2: sip.allow_from: is empty; list at least one IP or CIDR ("0.0.0.0/0" allows any)'
    )


def test_bad_codec(tmp_path: Path) -> None:
    error = load_error(tmp_path, "sip:\n  codecs:\n    - pcmu\n    - opus\n")
    assert short(error, tmp_path) == "F:4: sip.codecs[1]: 'opus' is not allowed; use one of: PCMA, PCMU, G722"


def test_empty_and_duplicate_codecs(tmp_path: Path) -> None:
    assert message(load_error(tmp_path, "sip: {codecs: []}\n")).endswith(
        ":1: sip.codecs: is empty; list at least one of: PCMA, PCMU, G722")
    assert message(load_error(tmp_path, "sip: {codecs: [PCMA, pcma]}\n")).endswith(
        ":1: sip.codecs[1]: 'PCMA' is listed twice; list each codec once")


@pytest.mark.parametrize(
    ("ports", "what"),
    [
        ("20001-20999", "'20001-20999' starts on an odd port"),
        ("20000-10000", "'20000-10000' does not go up"),
        ("1000-2000", "'1000-2000' is outside 1024..65535"),
        ("20000-70000", "'20000-70000' is outside 1024..65535"),
        ("20000", "'20000' is not start-end"),
    ],
)
def test_bad_rtp_range(tmp_path: Path, ports: str, what: str) -> None:
    error = load_error(tmp_path, f"sip:\n  max_calls: 1\n  rtp_ports: '{ports}'\n")
    assert message(error) == (
        f"{tmp_path / 'registratura.yaml'}:3: sip.rtp_ports: {what}; "
        'use "start-end": even start below end, both 1024..65535, e.g. "20000-20999"'
    )


def test_rtp_range_must_fit_max_calls(tmp_path: Path) -> None:
    error = load_error(tmp_path, "sip:\n  rtp_ports: '20000-20009'\n  max_calls: 6\n")
    assert message(error).endswith(
        ":2: sip.rtp_ports: '20000-20009' fits 5 calls, not 6; give at least 12 ports or lower max_calls")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('sip:\n  max_calls: "12"\n',
         "2: sip.max_calls: '12' is text, not an integer; use a whole number 1..1024 without quotes"),
        ("sip:\n  max_calls: 2000\n", "2: sip.max_calls: 2000 is out of range; use a whole number 1..1024"),
        ("silence:\n  retries: 1.5\n",
         "2: silence.retries: 1.5 is a number, not an integer; use a whole number 0..10 without quotes"),
        ("silence:\n  no_input_timeout: yes\n",
         "2: silence.no_input_timeout: True is a boolean, not a number; use 1..120 s without quotes"),
        ("clinic:\n  name: 42\n", "2: clinic.name: 42 is an integer, not text; put the value in quotes"),
        ("sip:\n  codecs: PCMA\n",
         "2: sip.codecs: 'PCMA' is text, not a list; use a list, e.g. [PCMA, PCMU, G722]"),
        ("sip: 5060\n", "1: sip: 5060 is an integer, not a mapping; allowed: listen, public_address, "
         "allow_from, codecs, rtp_ports, max_calls, registration, dtmf, outbound"),
    ],
)
def test_wrong_yaml_type(tmp_path: Path, text: str, expected: str) -> None:
    error = load_error(tmp_path, text)
    assert error.code == "E104"
    assert message(error) == f"{tmp_path / 'registratura.yaml'}:{expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clinic: {timezone: Mars/Olympus}\n",
         "clinic.timezone: 'Mars/Olympus' is not a known time zone; use e.g. \"Europe/Moscow\""),
        ("clinic: {region: XX}\n",
         "clinic.region: 'XX' is not an ISO country code; use two letters, e.g. \"RU\""),
        ("clinic: {language: de}\n", "clinic.language: 'de' is not allowed; use one of: ru, en"),
        ("sip: {public_address: example.org}\n",
         "sip.public_address: 'example.org' is not an IP address; use e.g. \"192.168.1.10\""),
        ("flows: {main: clinic_ru.yaml}\n",
         "flows.main: 'clinic_ru.yaml' is not a flow name; "
         "use the flow file name without .yaml, e.g. clinic_ru"),
        ("recording: {mode: some}\n", "recording.mode: 'some' is not allowed; use one of: all, queue, none"),
        ("log: {level: TRACE}\n",
         "log.level: 'TRACE' is not allowed; use one of: DEBUG, INFO, WARNING, ERROR"),
        ("sip: {registration: {registrar: 'pbx.local', user: u, password: p}}\n",
         "sip.registration.registrar: 'pbx.local' is not a SIP URI; "
         'use "sip:host[:port]", e.g. "sip:192.168.1.1:5060"'),
    ],
)
def test_bad_values(tmp_path: Path, text: str, expected: str) -> None:
    assert message(load_error(tmp_path, text)) == f"{tmp_path / 'registratura.yaml'}:1: {expected}"


def test_missing_required_key_points_at_its_section(tmp_path: Path) -> None:
    error = load_error(tmp_path, "sip:\n  registration:\n    registrar: 'sip:10.0.0.1'\n    user: box\n")
    assert error.code == "E105"
    assert message(error) == (
        f"{tmp_path / 'registratura.yaml'}:2: sip.registration.password: missing required key; "
        "add password: under sip.registration"
    )


def test_all_errors_are_reported_in_file_order(tmp_path: Path) -> None:
    text = "log: {level: loud}\nsip:\n  max_calls: '3'\n  lisen: x\nclinic: {language: de}\n"
    error = load_error(tmp_path, text)
    lines = message(error).splitlines()
    assert [re.match(r".*?:(\d+): ([\w.]+):", line).groups() for line in lines] == [
        ("1", "log.level"), ("3", "sip.max_calls"), ("4", "sip.lisen"), ("5", "clinic.language"),
    ]
    assert error.code == "E104"  # the first problem's code
    assert str(error).splitlines()[0] == f"E104: {lines[0]}"


def test_duplicate_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, "sip:\n  max_calls: 4\n  max_calls: 8\n")
    assert message(error).endswith(":3: sip.max_calls: duplicate key; keep only one")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.code == "E101"
    assert message(info.value) == (
        f"{path}: settings file not found; pass --config or create it (see image/registratura.example.yaml)"
    )


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "clinic:\n  name: X\nsip:\n  listen: 0.0.0.0:5060: oops\n")
    assert error.code == "E102"
    assert message(error) == (
        f"{tmp_path / 'registratura.yaml'}:4: invalid YAML: mapping values are not allowed here; "
        "fix the syntax at column 23"
    )
    assert "\n" not in message(error)


def test_yaml_unclosed_quote_names_where_it_started(tmp_path: Path) -> None:
    error = load_error(tmp_path, "clinic:\n  name: 'X\nsip: {}\n")
    assert error.code == "E102"
    assert re.fullmatch(
        rf"{re.escape(str(tmp_path / 'registratura.yaml'))}:\d+: invalid YAML: .+ "
        r"\(while scanning a quoted scalar at line 2\); fix the syntax at column \d+",
        message(error),
    )


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    error = load_error(tmp_path, "- a\n- b\n")
    assert short(error, tmp_path).startswith("F:1: settings: ['a', 'b'] is a list, not a mapping; allowed:")


def test_from_mapping_accepts_paths(tmp_path: Path) -> None:
    s = settings_from_mapping({"data_dir": Path("data"), "voices": {"dir": tmp_path / "v"}}, tmp_path)
    assert (s.data_dir, s.voices.dir, s.source) == (tmp_path / "data", tmp_path / "v", "<built-in>")


def test_from_mapping_has_no_line_numbers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"sip": {"max_calls": 0}}, tmp_path, source="<demo>")
    assert message(info.value) == "<demo>: sip.max_calls: 0 is out of range; use a whole number 1..1024"


def test_example_file_loads_cleanly() -> None:
    s = load_settings(EXAMPLE)
    assert s.sip.codecs == ("PCMA", "PCMU", "G722")
    assert s.flows.dir == EXAMPLE.parent / "ivr_flows"
    # Apart from the paths, the example shows exactly the defaults.
    assert s.sip == settings_from_mapping({}, EXAMPLE.parent).sip
    assert s.clinic == settings_from_mapping({}, EXAMPLE.parent).clinic


def test_example_file_commented_blocks_load(tmp_path: Path) -> None:
    # Uncomment "# key: value" lines (registration, basic_auth) to check the documented optional blocks.
    text = re.sub(r"(?m)^(\s*)# ( *[a-z_]+:(?:\s|$))", r"\1\2", EXAMPLE.read_text(encoding="utf-8"))
    s = load_settings(write(tmp_path, text))
    assert s.sip.registration == Registration("sip:192.168.1.1:5060", "registratura", "secret", "*", 300)
    assert s.metrics.basic_auth == BasicAuth("prometheus", "secret")


def test_every_schema_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in ["name", "region", "language", "timezone", "listen", "public_address", "allow_from", "codecs",
                "rtp_ports", "max_calls", "registration", "registrar", "user", "password", "realm", "expires",
                "interdigit_timeout", "data_dir", "dir", "cache", "main", "basic_auth", "mode", "format",
                "no_input_timeout", "retries", "dead_line_timeout", "level"]:
        assert re.search(rf"(?m)^[\s#]*{key}:", text), key


# ---- security.feature_codes: the receptionist's keys during a call ----

def test_feature_codes_default_and_configured(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")).security.feature_codes.by_code() == {"*9": "abusive", "*0": "threat"}
    text = "security:\n  feature_codes:\n    abusive: '#7'\n    threat: \"*911\"\n"
    codes = load_settings(write(tmp_path, text)).security.feature_codes
    assert (codes.abusive, codes.threat) == ("#7", "*911")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("security:\n  feature_codes:\n    abusive: '9'\n",
         "F:3: security.feature_codes.abusive: '9' is not a feature code; "
         'use * or # and one to three digits, in quotes, e.g. "*9"'),
        ("security:\n  feature_codes:\n    threat: '*1234'\n",
         "F:3: security.feature_codes.threat: '*1234' is not a feature code; "
         'use * or # and one to three digits, in quotes, e.g. "*9"'),
        ("security:\n  feature_codes:\n    threat: 9\n",
         "F:3: security.feature_codes.threat: 9 is an integer, not text; put the value in quotes"),
        ("security:\n  feature_codes:\n    abusive: '*5'\n    threat: '*5'\n",
         "F:4: security.feature_codes.threat: '*5' is the abusive code too; "
         'give each mark its own code (defaults: abusive "*9", threat "*0")'),
        ("security:\n  feature_codes:\n    abusive: '*9'\n    threat: #5\n",
         'F:4: security.feature_codes.threat: the value after # is read as a YAML comment; quote the code, e.g. "#5"'),
        ("security:\n  feature_codes: {abusive: *9}\n",
         "F:2: invalid YAML: found undefined alias '9' (a value starting with * must be quoted, e.g. \"*9\"); "
         "fix the syntax at column 28"),
        ("security:\n  feature_codes: {abuse: '*9'}\n",
         "F:2: security.feature_codes.abuse: unknown key (did you mean 'abusive'?); allowed: abusive, threat"),
    ],
)
def test_bad_feature_codes(tmp_path: Path, text: str, expected: str) -> None:
    assert short(load_error(tmp_path, text), tmp_path) == expected


def test_duplicate_feature_codes_in_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"security": {"feature_codes": {"abusive": "*0"}}}, tmp_path, source="<demo>")
    assert message(info.value).startswith("<demo>: security.feature_codes.threat: '*0' is the abusive code too")
    assert info.value.code == "E104"


def test_example_documents_the_feature_codes() -> None:
    s = load_settings(EXAMPLE)
    assert s.security == settings_from_mapping({}, EXAMPLE.parent).security
    assert '    abusive: "*9"' in EXAMPLE.read_text(encoding="utf-8")

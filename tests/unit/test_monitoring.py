"""monitoring/: the Grafana dashboard, the Prometheus scrape example and the alert rules.

The dashboard is checked as JSON (panels, thresholds, variables, layout) and its queries are parsed by promtool; the
rules pass `promtool check rules` and their unit tests; every metric name the dashboard and the rules use is either
exported by appliance/metrics.py or listed in EXPECTED_LATER below, so renaming a metric breaks this test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from appliance import metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "registratura.json"
PROM_DIR = MONITORING / "prometheus"
RULES = PROM_DIR / "registratura-rules.yml"
RULES_TEST = PROM_DIR / "registratura-rules.test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
README = MONITORING / "README.md"

# Metrics the dashboard and the alert rules use that appliance/metrics.py does not export yet: the series name
# (as scraped) -> (who provides it, its labels besides job/instance). When one lands in appliance/metrics.py the
# registry becomes the authority for it (a warning asks to drop it from here); a different name or label there
# than here makes this test fail.
EXPECTED_LATER: dict[str, tuple[str, frozenset[str]]] = {
    # Queue and receptionists (issue 5), computed from the store over rolling windows 15m / 1h / today.
    "registratura_queue_service_level_ratio": ("queue issue #5", frozenset({"queue", "window"})),
    "registratura_queue_abandoned_ratio": ("queue issue #5", frozenset({"queue", "window"})),
    # Callers offered to the queue in the window: the SL and abandoned alerts only fire when it is above 0.
    "registratura_queue_offered_calls": ("queue issue #5", frozenset({"queue", "window"})),
    "registratura_queue_average_speed_of_answer_seconds": ("queue issue #5", frozenset({"queue", "window"})),
    # Histogram registratura_queue_wait_seconds{queue} (with a 20 s bucket): the dashboard reads its buckets.
    "registratura_queue_wait_seconds_bucket": ("queue issue #5", frozenset({"queue", "le"})),
    "registratura_callbacks": ("queue issue #5", frozenset({"state"})),
}
# The entries above are computed from the store at scrape time (appliance/acd/collector.py), not declared in
# appliance/metrics.py; test_store_collector_exports_them checks the collector really produces them.

# Series from outside the box: Prometheus itself and node_exporter (job "node").
EXTERNAL: dict[str, frozenset[str]] = {
    "up": frozenset(),
    "node_filesystem_avail_bytes": frozenset({"device", "fstype", "mountpoint"}),
    "node_filesystem_size_bytes": frozenset({"device", "fstype", "mountpoint"}),
}
TARGET_LABELS = frozenset({"job", "instance"})

EXPECTED_ALERTS = {
    "ServiceLevelBelow80", "AbandonedAbove5Percent", "RegistraturaDown", "DiskFilling", "ThreatCall",
    "CallbacksFailing", "SipCapacityLow", "MediaPortsLow", "RecordingStopped", "TrunkUnregistered",
}

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def registry_series() -> dict[str, frozenset[str]]:
    """Series names appliance/metrics.py exports (as scraped: counters end in _total) -> their labels."""
    declared = {
        obj._name: frozenset(getattr(obj, "_labelnames", ()))
        for obj in vars(metrics).values()
        if isinstance(obj, MetricWrapperBase)
    }
    out: dict[str, frozenset[str]] = {}
    for family in metrics.REGISTRY.collect():
        labels = declared.get(family.name, frozenset()) | {k for s in family.samples for k in s.labels}
        for suffix in _SUFFIXES.get(family.type, ("",)):
            out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        for sample in family.samples:
            out.setdefault(sample.name, frozenset(labels))
    return out


def known_series() -> dict[str, frozenset[str]]:
    registry = registry_series()
    already = sorted(set(EXPECTED_LATER) & set(registry))
    if already:
        warnings.warn(f"now exported by appliance/metrics.py, drop from EXPECTED_LATER: {already}", stacklevel=2)
    known = {name: labels for name, (_, labels) in EXPECTED_LATER.items()}
    known.update(EXTERNAL)
    known.update(registry)
    return known


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def data_panels(dashboard: dict) -> list[dict]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in data_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def load_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {r["alert"]: r for r in load_rules() if "alert" in r}


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


_NAME = re.compile(r"(?<![\w:])(registratura_\w+|node_\w+|up)(?![\w(])")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values are dropped first; `label_values(m, l)` counts m)."""
    return set(_NAME.findall(_strip_strings(expr)))


def label_names(expr: str) -> set[str]:
    """Labels a PromQL expression matches on or groups by."""
    text = _strip_strings(expr)
    found: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", text):
        found.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        found.update(x.strip() for x in body.split(",") if x.strip())
    if m := re.match(r"\s*label_values\(\s*[^,]+,\s*(\w+)\s*\)", text):
        found.add(m.group(1))
    return found


def all_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every query of the dashboard and every rule."""
    out = [("dashboard", e) for e in dashboard_exprs(load_dashboard())]
    out += [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in load_rules()]
    return out


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; CI installs it)")
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


# ------------------------------------------------------------------------------------------------ dashboard


def test_dashboard_is_importable_json():
    d = load_dashboard()
    assert d["title"] == "Registratura — clinic phone line"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    assert d["refresh"] == "30s"
    assert d["time"]["from"] == "now-24h"
    assert 36 <= d["schemaVersion"] <= 41
    assert d.get("id") is None, "an exported id would overwrite another dashboard on import"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_variables():
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    ds = variables["DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    queue = variables["queue"]
    assert queue["type"] == "query"
    assert queue["definition"] == "label_values(registratura_queue_waiting_calls, queue)"
    assert queue["query"]["query"] == queue["definition"]
    assert queue["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    assert queue["includeAll"] and queue["multi"] and queue["allValue"] == ".*"


def test_every_panel_uses_the_datasource_variable_and_explains_itself():
    for p in data_panels(load_dashboard()):
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
            assert t["expr"].strip(), p["title"]
        assert len(p.get("description", "")) >= 30, f"{p['title']}: say in plain words what it shows"


def test_layout_fits_and_does_not_overlap():
    taken: set[tuple[int, int]] = set()
    for p in panels(load_dashboard()):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells


# metric -> (panel types that must show it, fragments one of its queries must contain)
REQUIRED_PANELS: dict[str, tuple[set[str], list[str]]] = {
    "registratura_queue_service_level_ratio": ({"stat", "timeseries"}, ['window="1h"', 'window="today"',
                                                                       'window="15m"']),
    "registratura_queue_abandoned_ratio": ({"stat", "timeseries"}, ['window="1h"', 'window="today"']),
    "registratura_queue_waiting_calls": ({"stat", "timeseries"}, []),
    "registratura_queue_longest_wait_seconds": ({"stat", "timeseries"}, []),
    "registratura_queue_wait_seconds_bucket": ({"heatmap", "timeseries"}, ["histogram_quantile(0.95",
                                                                           "histogram_quantile(0.5"]),
    "registratura_queue_agents": ({"timeseries"}, ["by (state)"]),
    "registratura_callbacks": ({"stat"}, ["pending", "done", "failed"]),
    "registratura_queue_average_speed_of_answer_seconds": ({"timeseries"}, []),
    "registratura_calls_total": ({"timeseries"}, ["increase(registratura_calls_total[1h])", "by (outcome)"]),
    "registratura_active_calls": ({"stat", "timeseries"}, []),
    "registratura_rejected_invites_total": ({"timeseries"}, ["rate(registratura_rejected_invites_total[5m])",
                                                             "by (reason)"]),
    "registratura_sip_call_capacity": ({"timeseries"}, []),
    "registratura_threats_total": ({"stat"}, []),
    "registratura_recording_disk_full": ({"stat"}, []),
    "up": ({"stat"}, ['up{job="registratura"}']),
}


@pytest.mark.parametrize("metric", sorted(REQUIRED_PANELS))
def test_dashboard_shows(metric):
    types, fragments = REQUIRED_PANELS[metric]
    showing = [
        (p["type"], t["expr"])
        for p in data_panels(load_dashboard())
        for t in p["targets"]
        if metric in metric_names(t["expr"])
    ]
    assert types <= {kind for kind, _ in showing}, f"{metric}: wanted panels {types}, got {showing}"
    joined = "\n".join(expr for _, expr in showing)
    for fragment in fragments:
        assert fragment in joined, f"{metric}: no query with {fragment!r}"


def test_queue_panels_follow_the_queue_variable():
    for p in data_panels(load_dashboard()):
        for t in p["targets"]:
            if any(n.startswith("registratura_queue_") for n in metric_names(t["expr"])):
                assert 'queue=~"$queue"' in t["expr"], f"{p['title']}: {t['expr']}"


def test_calls_by_hour_is_a_stacked_hourly_bar_chart():
    (p,) = [p for p in data_panels(load_dashboard()) if p["title"] == "Calls by hour"]
    custom = p["fieldConfig"]["defaults"]["custom"]
    assert custom["drawStyle"] == "bars" and custom["stacking"]["mode"] == "normal"
    assert p["interval"] == "1h"


def _steps(panel: dict) -> list[tuple[float | None, str]]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [(s["value"], s["color"]) for s in steps]


def _panels_with(metric: str) -> list[dict]:
    return [
        p for p in data_panels(load_dashboard())
        if any(metric in metric_names(t["expr"]) for t in p["targets"])
    ]


def test_service_level_is_green_from_80_percent_amber_from_70_red_below():
    found = _panels_with("registratura_queue_service_level_ratio")
    assert {p["type"] for p in found} >= {"stat", "timeseries"}
    for p in found:
        assert _steps(p) == [(None, "red"), (0.7, "orange"), (0.8, "green")], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_abandoned_is_green_up_to_5_percent_amber_to_8_red_above():
    found = _panels_with("registratura_queue_abandoned_ratio")
    assert {p["type"] for p in found} >= {"stat", "timeseries"}
    for p in found:
        assert _steps(p) == [(None, "green"), (0.05, "orange"), (0.08, "red")], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_dashboard_queries_parse(tmp_path):
    """Every dashboard query, with Grafana's variables filled in, is valid PromQL for promtool."""
    tool = promtool()
    rules = []
    for i, expr in enumerate(dashboard_exprs(load_dashboard())):
        if expr.startswith("label_values("):
            continue
        expr = expr.replace("$queue", ".*")
        expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expr)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run(tool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------ metric names


def test_every_metric_used_is_exported_or_expected_later():
    known = known_series()
    for where, expr in all_exprs():
        for name in metric_names(expr):
            assert name in known, (
                f"{where} uses {name}, which appliance/metrics.py does not export and EXPECTED_LATER does not "
                f"list: {expr}"
            )


def test_labels_used_exist_on_the_metrics():
    known = known_series()
    for where, expr in all_exprs():
        names = metric_names(expr)
        allowed = set(TARGET_LABELS).union(*(known.get(n, frozenset()) for n in names))
        if any(n.endswith("_bucket") for n in names):
            allowed.add("le")
        unknown = label_names(expr) - allowed
        assert not unknown, f"{where}: labels {sorted(unknown)} are not on {sorted(names)}: {expr}"


def test_expected_later_is_not_stale():
    used = {name for _, expr in all_exprs() for name in metric_names(expr)}
    assert not set(EXPECTED_LATER) - used, "EXPECTED_LATER lists metrics nothing uses"


def test_readme_lists_every_metric_used():
    text = README.read_text(encoding="utf-8")
    for name in sorted({name for _, expr in all_exprs() for name in metric_names(expr)}):
        assert f"`{name}" in text, f"monitoring/README.md does not list {name}"


def test_metric_name_parser():
    expr = 'sum by (le) (increase(registratura_queue_wait_seconds_bucket{queue=~"registratura_x"}[5m])) / up'
    assert metric_names(expr) == {"registratura_queue_wait_seconds_bucket", "up"}
    assert label_names(expr) == {"le", "queue"}
    assert metric_names("label_values(registratura_queue_waiting_calls, queue)") == {
        "registratura_queue_waiting_calls"
    }


# ------------------------------------------------------------------------------------------------ alert rules


def test_alerts_are_there_with_severity_and_plain_words():
    found = alerts()
    assert set(found) == EXPECTED_ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        description = rule["annotations"]["description"]
        assert re.search(r"[А-Яа-яЁё]", description), f"{name}: add a Russian line for the clinic staff"


def test_alert_thresholds_and_durations():
    a = alerts()
    sl = a["ServiceLevelBelow80"]
    assert 'registratura_queue_service_level_ratio{job="registratura", window="1h"} < 0.8' in sl["expr"]
    assert "registratura_queue_offered_calls" in sl["expr"] and sl["for"] == "30m"
    ab = a["AbandonedAbove5Percent"]
    assert 'registratura_queue_abandoned_ratio{job="registratura", window="1h"} > 0.05' in ab["expr"]
    assert ab["for"] == "15m"
    down = a["RegistraturaDown"]
    assert 'up{job="registratura"} == 0' in down["expr"] and 'absent(up{job="registratura"})' in down["expr"]
    assert down["for"] == "2m" and down["labels"]["severity"] == "critical"
    threat = a["ThreatCall"]
    assert "increase(registratura_threats_total" in threat["expr"]
    assert threat["for"] == "0m" and threat["labels"]["severity"] == "critical"
    disk = a["DiskFilling"]
    assert "< 0.10" in disk["expr"] and "predict_linear(node_filesystem_avail_bytes" in disk["expr"]
    assert "24 * 3600" in disk["expr"]
    assert "> 0.8" in a["SipCapacityLow"]["expr"] and a["SipCapacityLow"]["for"] == "5m"
    assert 'registratura_callbacks{job="registratura", state="failed"}' in a["CallbacksFailing"]["expr"]
    assert "registratura_recording_disk_full" in a["RecordingStopped"]["expr"]


def test_rule_unit_tests_prove_each_alert_fires_and_stays_quiet():
    doc = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    fires, quiet = set(), set()
    for group in doc["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fires >= EXPECTED_ALERTS, f"no firing case for {EXPECTED_ALERTS - fires}"
    assert quiet >= EXPECTED_ALERTS, f"no quiet case for {EXPECTED_ALERTS - quiet}"


def test_promtool_check_rules():
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_test_rules():
    result = run(promtool(), "test", "rules", RULES_TEST.name, cwd=PROM_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------ scrape config


def test_promtool_check_config():
    result = run(promtool(), "check", "config", str(PROM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_matches_the_rules():
    config = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    assert config["rule_files"] == [RULES.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"registratura", "node"}, "the rules select job=\"registratura\" and job=\"node\""
    box = jobs["registratura"]
    assert box["scrape_interval"] == "15s" and box["metrics_path"] == "/metrics"
    assert box["static_configs"][0]["targets"] == ["192.168.1.50:9310"]
    assert jobs["node"]["static_configs"][0]["targets"] == ["192.168.1.50:9100"]
    assert "# basic_auth:" in PROM_CONFIG.read_text(encoding="utf-8")


def test_store_collector_exports_them(tmp_path):
    """The series computed from the store exist with the labels the dashboard and rules use."""
    import time

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from appliance.acd.collector import QueueStatsCollector
    from appliance.acd.model import QueueEvent as E
    from appliance.acd.model import QueueLogRecord as R
    from appliance.settings import settings_from_mapping
    from appliance.store import Store

    settings = settings_from_mapping({"data_dir": str(tmp_path), "queues": {"reception": {}}}, tmp_path)
    now = time.time() - 30
    store = Store(tmp_path / "r.db")
    store.write_acd([R("reception", "a", "NONE", E.ENTER, now - 10, position=1, number="+79160000001"),
                     R("reception", "a", "sip:101@x", E.CONNECT, now, wait=10, position=1, orig_position=1)])
    store.close()
    reg = CollectorRegistry()
    reg.register(QueueStatsCollector(tmp_path / "r.db", settings))
    seen: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for sample in fam.samples:
            seen.setdefault(sample.name, set()).update(sample.labels)
    for name, (_, labels) in EXPECTED_LATER.items():
        assert name in seen, f"{name} is not produced by the store collector"
        assert seen[name] == set(labels), f"{name}: labels {seen[name]} != {set(labels)}"

"""The appliance's nftables rules, rendered from the settings: SIP and RTP only from known peers, metrics from the LAN.

Pure: settings in, ruleset text out (``registratura firewall render``; image/nftables/registratura.nft is this
rendering of image/registratura.example.yaml). The design, top to bottom of the input chain:

- loopback is trusted; forwarding is off (the box is no router);
- SIP (UDP, the listen port) is looked at *before* conntrack's shortcut, so every SIP packet of a peer passes
  the per-source rate limit, however long the peer has been talking: SIP peers are ``sip.allow_from`` plus
  the hosts of the receptionists' phones, transfer targets, the outbound route and the registrar (IP
  literals; a host name cannot be put in a rule, so a peer known by name gets only replies to the box's own
  requests, as established traffic). A peer over ``sip_rate`` packets a second (after a burst) is dropped
  for the excess; a stranger is dropped silently: no 403, no 100 Trying, nothing to scan;
- RTP (the rtp_ports range) from SIP peers; media from elsewhere (a trunk's media server named in its SDP)
  gets in only as replies to the box's own RTP (pjmedia sends first: symmetric RTP);
- the metrics port from ``metrics.allow_from`` only (empty there means "any" to the app; here it means the
  private ranges: the LAN), SSH from the same networks;
- established/related traffic (DNS, NTP, the box's own calls), ICMP and IPv6 neighbour discovery, DHCP;
- everything else is dropped and counted (named counters: ``nft list counters table inet registratura``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

TABLE = "registratura"
LAN = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10")
_HOST = re.compile(r"^sips?:(?:[^@\s]*@)?(\[[0-9A-Fa-f:.]+\]|[^:;>\s]+)")

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peers:
    """Where SIP may come from, split by family, plus the names that could not go into a rule."""

    v4: tuple[ipaddress.IPv4Network, ...] = ()
    v6: tuple[ipaddress.IPv6Network, ...] = ()
    names: tuple[str, ...] = field(default=())


def uri_host(uri: str) -> str:
    """'sip:101@192.168.1.21:5062;transport=udp' -> '192.168.1.21'; '[fd00::1]' -> 'fd00::1'; '' if none."""
    m = _HOST.match(uri.strip())
    return m.group(1).strip("[]") if m else ""


def _networks(items: Iterable[str]) -> tuple[list[Net], list[str]]:
    nets: list[Net] = []
    names: list[str] = []
    for item in items:
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.append(item)
    return nets, names


def _split(nets: Iterable[Net]) -> tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv6Network, ...]]:
    """Collapsed per family: nft refuses overlapping intervals in one set."""
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return tuple(ipaddress.collapse_addresses(v4)), tuple(ipaddress.collapse_addresses(v6))


def sip_peers(settings: Any) -> Peers:
    """Every source SIP may legitimately come from, according to the settings."""
    sip = settings.sip
    hosts = list(sip.allow_from)
    uris: list[str] = []
    for queue in settings.queues.values():
        uris.extend(queue.agents)
    uris.extend(settings.transfers.values())
    outbound = getattr(sip, "outbound", None)
    if outbound:
        uris.append(outbound)
    if sip.registration is not None:
        uris.append(sip.registration.registrar)
    hosts.extend(uri_host(u) for u in uris)
    nets, names = _networks(hosts)
    v4, v6 = _split(nets)
    return Peers(v4, v6, tuple(dict.fromkeys(names)))


def _elements(nets: Iterable[Net]) -> str:
    return ", ".join(str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in nets)


def _set(name: str, family: str, nets: tuple[Net, ...], comment: str) -> list[str]:
    lines = [f"    set {name} {{", f'        comment "{comment}"', f"        type {family}_addr",
             "        flags interval"]
    if nets:
        lines.append(f"        elements = {{ {_elements(nets)} }}")
    return [*lines, "    }"]


def render(settings: Any, *, sip_rate: int = 50, sip_burst: int = 100, ssh_port: int | None = 22,
           source: str = "", safe_mode_port: int | None = None) -> str:
    """The nftables ruleset for these settings (``nft -f`` replaces the table atomically). ``safe_mode_port``
    also opens that port to the management networks: the image's default rules, loaded when the box has no
    valid settings, let the LAN read safe mode's /healthz (appliance/safemode.py)."""
    sip = settings.sip
    metrics = settings.metrics
    peers = sip_peers(settings)
    m_host = ipaddress.ip_address(metrics.host)
    m_nets, _ = _networks(metrics.allow_from or LAN)
    m4, m6 = _split(m_nets)
    sip_port, rtp = sip.port, f"{sip.rtp_port_min}-{sip.rtp_port_max}"
    limit = f"limit rate over {sip_rate}/second burst {sip_burst} packets"

    out = [
        "#!/usr/sbin/nft -f",
        f"# Registratura firewall, rendered by `registratura firewall render`{' from ' + source if source else ''}.",
        "# Do not edit on the box: change registratura.yaml and render again. Load: nft -f <this file>",
        f"# SIP udp/{sip_port} and RTP udp/{rtp} only from SIP peers, at most {sip_rate} SIP packets/s per source",
        f"# (burst {sip_burst}); metrics tcp/{metrics.port} from the management networks; everything else dropped.",
    ]
    if safe_mode_port:
        out.append(f"# Default rules for a box without valid settings: tcp/{safe_mode_port} (safe mode's /healthz) "
                   "from the management networks too.")
    if peers.names:
        out.append(f"# Peers known by name (only replies to the box's own requests get in): {', '.join(peers.names)}")
    out += [
        "",
        f"table inet {TABLE}",  # make sure it exists, so the delete below never fails on the first load
        f"delete table inet {TABLE}",
        "",
        f"table inet {TABLE} {{",
        *_set("sip_peers_v4", "ipv4", peers.v4, "SIP and RTP peers: gateways, trunks, receptionists' phones"),
        *_set("sip_peers_v6", "ipv6", peers.v6, "SIP and RTP peers (IPv6)"),
        *_set("mgmt_v4", "ipv4", m4, "may scrape metrics and log in"),
        *_set("mgmt_v6", "ipv6", m6, "may scrape metrics and log in (IPv6)"),
        "    set sip_rate_v4 {",
        "        type ipv4_addr",
        "        size 65535",
        "        flags dynamic,timeout",
        "        timeout 1m",
        "    }",
        "    set sip_rate_v6 {",
        "        type ipv6_addr",
        "        size 65535",
        "        flags dynamic,timeout",
        "        timeout 1m",
        "    }",
        "",
        '    counter sip_refused { comment "SIP from strangers, dropped" }',
        '    counter sip_rate_limited { comment "SIP from peers over the rate limit, dropped" }',
        '    counter rtp_refused { comment "RTP from strangers, dropped" }',
        '    counter mgmt_refused { comment "metrics or SSH from outside the management networks, dropped" }',
        '    counter other_refused { comment "everything else, dropped" }',
        "",
        "    chain sip_in {",
        "        ip saddr @sip_peers_v4 jump sip_peer",
        "        ip6 saddr @sip_peers_v6 jump sip_peer",
        "        ct state established accept",
        '        counter name "sip_refused" drop',
        "    }",
        "",
        "    chain sip_peer {",
        f'        update @sip_rate_v4 {{ ip saddr {limit} }} counter name "sip_rate_limited" drop',
        f'        update @sip_rate_v6 {{ ip6 saddr {limit} }} counter name "sip_rate_limited" drop',
        "        accept",
        "    }",
        "",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        '        iif "lo" accept',
        f"        udp dport {sip_port} jump sip_in",
        "        ct state established,related accept",
        "        ct state invalid drop",
        f"        udp dport {rtp} ip saddr @sip_peers_v4 accept",
        f"        udp dport {rtp} ip6 saddr @sip_peers_v6 accept",
        f'        udp dport {rtp} counter name "rtp_refused" drop',
    ]
    mgmt_ports = [] if m_host.is_loopback else [metrics.port]
    if safe_mode_port and safe_mode_port not in mgmt_ports:
        mgmt_ports.append(safe_mode_port)
    if ssh_port:
        mgmt_ports.append(ssh_port)
    if mgmt_ports:
        ports = "{ " + ", ".join(str(p) for p in mgmt_ports) + " }"
        out += [
            f"        tcp dport {ports} ip saddr @mgmt_v4 accept",
            f"        tcp dport {ports} ip6 saddr @mgmt_v6 accept",
            f'        tcp dport {ports} counter name "mgmt_refused" drop',
        ]
    out += [
        "        icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } "
        "limit rate 20/second accept",
        "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-router-solicit } accept",
        "        icmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, "
        "parameter-problem } limit rate 20/second accept",
        "        udp sport 67 udp dport 68 accept",
        "        udp sport 547 udp dport 546 accept",
        '        counter name "other_refused"',
        "    }",
        "",
        "    chain forward {",
        "        type filter hook forward priority filter; policy drop;",
        "    }",
        "}",
        "",
    ]
    return "\n".join(out)

"""The underlay switch: nftables rules (``bridge`` family) in the underlay namespace.

All hosts' ``eth0`` peers are ports ``h<i>`` of one bridge ``ul0``; a forward chain
with policy drop lets a frame cross from port ``h<i>`` to ``h<j>`` only when the
pair is in the set ``links`` (the topology), not in ``cut`` and, for UDP, not in
``udp_block`` with that port. The hook sees flooded frames once per output port,
so ARP and broadcast obey the topology too. This module only writes nft text;
the lab applies it.
"""

from __future__ import annotations

from collections.abc import Iterable

TABLE = "lab"
FAMILY = "bridge"
BRIDGE = "ul0"


def port_name(host: int) -> str:
    """Name of host ``host``'s port on the underlay bridge."""
    return f"h{host}"


def _pairs(i: int, j: int) -> list[str]:
    a, b = port_name(i), port_name(j)
    return [f'"{a}" . "{b}"', f'"{b}" . "{a}"']


def _elements(items: Iterable[str]) -> str:
    items = list(items)
    return f" elements = {{ {', '.join(items)} }};" if items else ""


def ruleset(links: Iterable[tuple[int, int]]) -> str:
    """The whole table for a topology given as undirected links (i, j).

    Loaded with ``nft -f -`` in the underlay namespace; the leading ``destroy`` is
    spelled as add+delete so a reload replaces the table atomically.
    """
    elements = [p for i, j in sorted(links) for p in _pairs(i, j)]
    return f"""\
add table {FAMILY} {TABLE}
delete table {FAMILY} {TABLE}
table {FAMILY} {TABLE} {{
  set links {{ type ifname . ifname;{_elements(elements)} }}
  set cut {{ type ifname . ifname; }}
  set udp_block {{ type ifname . ifname . inet_service; }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    iifname . oifname @cut counter drop
    meta l4proto udp iifname . oifname . udp dport @udp_block counter drop
    meta l4proto udp iifname . oifname . udp sport @udp_block counter drop
    iifname . oifname @links accept
    counter
  }}
}}
"""


def cut_command(i: int, j: int, *, restore: bool = False) -> str:
    """nft command that cuts (or, with ``restore``, restores) the link between i and j, both ways."""
    verb = "delete" if restore else "add"
    return f"{verb} element {FAMILY} {TABLE} cut {{ {', '.join(_pairs(i, j))} }}"


def udp_block_command(i: int, j: int, port: int, *, unblock: bool = False) -> str:
    """nft command that drops (or lets through again) UDP to/from ``port`` between i and j."""
    verb = "delete" if unblock else "add"
    elems = [f"{p} . {port}" for p in _pairs(i, j)]
    return f"{verb} element {FAMILY} {TABLE} udp_block {{ {', '.join(elems)} }}"

"""Short human forms of numbers, durations and endpoints (pure; "n/a" for unknown)."""

from __future__ import annotations

NA = "n/a"
_UNITS = ("", "K", "M", "G", "T", "P")


def fmt_count(n: float | None) -> str:
    """1234567 -> "1.2M" (decimal units, as network counters are usually read)."""
    if n is None:
        return NA
    v = float(n)
    for unit in _UNITS:
        if abs(v) < 1000 or unit == _UNITS[-1]:
            if unit == "":
                return f"{v:.0f}"
            return f"{v:.1f}{unit}" if abs(v) < 100 else f"{v:.0f}{unit}"
        v /= 1000
    return NA  # unreachable


def fmt_bytes(n: float | None) -> str:
    return NA if n is None else fmt_count(n) + "B"


def fmt_rate(bps: float | None) -> str:
    """Bytes per second -> "1.2MB/s"."""
    return NA if bps is None else fmt_count(bps) + "B/s"


def fmt_duration(s: float | None) -> str:
    if s is None or s < 0:
        return NA
    s = int(s)
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return NA
    return f"{ms:.2f}ms" if ms < 10 else f"{ms:.0f}ms"


def fmt_endpoint(ip: str | None, port: int | None, name: str | None = None, mac: str | None = None) -> str:
    """"web1(10.32.0.1):80", "10.32.0.1:80", "[fe80::1]:80", or the MAC when there is no IP."""
    if ip is None:
        return mac or NA
    host = f"[{ip}]" if ":" in ip and port else ip
    if name:
        host = f"{name}({host})"
    return f"{host}:{port}" if port else host


def fmt_opt(v: object) -> str:
    if v is None:
        return NA
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)

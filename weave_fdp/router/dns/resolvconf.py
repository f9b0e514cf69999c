"""The resolver file of a ``netns:NAME`` container: /etc/netns/NAME/resolv.conf.

``ip netns exec NAME`` (and so every program started that way) sees that file as
/etc/resolv.conf. Attach writes one naming the weaveDNS address and the search
domain; detach removes it. A file the user had there is kept aside and put back.
"""

from __future__ import annotations

import os
from pathlib import Path

from weave_fdp.router.state import atomic_write_bytes

NETNS_ETC = Path("/etc/netns")
MARK = "# written by weave-fdp attach: this host's weaveDNS (removed by detach)"
SAVED = "resolv.conf.weave-fdp-saved"


def path_for(target: str, root: Path = NETNS_ETC) -> Path | None:
    """The file for ``netns:NAME`` targets; None for the others (their files are not ours)."""
    if not target.startswith("netns:"):
        return None
    return root / target[6:] / "resolv.conf"


def content(nameserver: str, domain: str) -> str:
    return f"{MARK}\nnameserver {nameserver}\nsearch {domain.rstrip('.')}\noptions ndots:1 timeout:2 attempts:2\n"


def write(path: Path, nameserver: str, domain: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not _ours(path) and not (path.parent / SAVED).exists():
        os.replace(path, path.parent / SAVED)
    atomic_write_bytes(path, content(nameserver, domain).encode())


def remove(path: Path) -> bool:
    """Remove our file (put back the user's); False when there was none of ours."""
    if not path.exists() or not _ours(path):
        return False
    saved = path.parent / SAVED
    if saved.exists():
        os.replace(saved, path)
    else:
        path.unlink()
        try:
            path.parent.rmdir()        # only if empty: the user's other files stay
        except OSError:
            pass
    return True


def _ours(path: Path) -> bool:
    try:
        return path.read_text().startswith(MARK)
    except OSError:
        return False

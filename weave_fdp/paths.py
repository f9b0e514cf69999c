"""Where a host's state and runtime files live.

Every network namespace is a host (the lab makes several on one machine), so the
defaults are keyed by the name of the namespace this process runs in.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_ROOT = Path(os.environ.get("WEAVE_FDP_STATE_ROOT", "/var/lib/weave-fdp"))
RUNTIME_ROOT = Path(os.environ.get("WEAVE_FDP_RUNTIME_ROOT", "/run/weave-fdp"))
BPFFS_ROOT = Path("/sys/fs/bpf/weave-fdp")
NETNS_RUN_DIR = Path("/run/netns")
DEFAULT_HOST_KEY = "default"


def current_netns_name() -> str | None:
    """Name of the named namespace (``ip netns``) this process is in, or None for the initial one."""
    try:
        me = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    if NETNS_RUN_DIR.is_dir():
        for entry in NETNS_RUN_DIR.iterdir():
            try:
                st = entry.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
                return entry.name
    return None


def host_key() -> str:
    """Key that separates the files of hosts sharing one filesystem."""
    return os.environ.get("WEAVE_FDP_HOST") or current_netns_name() or DEFAULT_HOST_KEY


def state_dir() -> Path:
    return Path(os.environ.get("WEAVE_FDP_STATE_DIR") or STATE_ROOT / host_key())


def runtime_dir() -> Path:
    return Path(os.environ.get("WEAVE_FDP_RUNTIME_DIR") or RUNTIME_ROOT / host_key())


def bpf_pin_dir() -> Path:
    return BPFFS_ROOT / host_key()


def api_socket_name() -> str:
    """Abstract Unix socket of the router API.

    Abstract sockets belong to the network namespace, so the CLI run inside a
    host's namespace finds that host's router with no flags. The server checks
    SO_PEERCRED and serves root only.
    """
    return "\0weave-fdp/api"

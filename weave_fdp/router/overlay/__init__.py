"""Overlay registry: which data planes the router runs, in order of preference.

Each entry names a module that exposes ``make_overlay(config) -> Overlay``
(see ``base.Overlay``). A module that is missing or fails to import is skipped with
a log line, so the control plane runs before the data planes exist.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from weave_fdp.router.overlay.base import Overlay

log = logging.getLogger(__name__)

#: overlay name -> module exposing make_overlay(config); most preferred first.
OVERLAY_FACTORIES: dict[str, str] = {
    "fastdp": "weave_fdp.router.overlay.fastdp",
    "sleeve": "weave_fdp.router.overlay.sleeve",
}


def load_overlays(config: Any) -> list[Overlay]:
    """Instantiate the available overlays, honouring ``config.no_fastdp``.

    WEAVE_FDP_OVERLAYS=name,... (or "none") restricts the set: control-plane tests
    use it to run routers without data planes.
    """
    out: list[Overlay] = []
    only = os.environ.get("WEAVE_FDP_OVERLAYS")
    allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
    for name, modname in OVERLAY_FACTORIES.items():
        if allowed is not None and name not in allowed:
            continue
        if name == "fastdp" and getattr(config, "no_fastdp", False):
            log.info("overlay fastdp disabled by --no-fastdp")
            continue
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            log.info("overlay %s not available: %s", name, exc)
            continue
        factory = getattr(module, "make_overlay", None)
        if factory is None:
            log.info("overlay %s: module %s has no make_overlay(config)", name, modname)
            continue
        try:
            overlay = factory(config)
        except Exception as exc:  # one broken overlay must not stop the router
            log.warning("overlay %s could not be created: %s", name, exc)
            continue
        if overlay is not None:
            out.append(overlay)
    return out

"""``python -m weave_fdp.router``: the router process `weave-fdp launch` starts in the background.

The configuration comes as JSON in WEAVE_FDP_ROUTER_CONFIG (so the password never
shows in ``ps``). Startup failures print ``error: <message>`` and exit with the
error's code, which `launch` relays to the user.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from weave_fdp.errors import FdpError
from weave_fdp.router.config import RouterConfig
from weave_fdp.router.logfile import LOG_ENV, RouterLogHandler


def main() -> None:
    raw = json.loads(os.environ.pop("WEAVE_FDP_ROUTER_CONFIG", "{}"))
    if raw.get("state_dir"):
        raw["state_dir"] = Path(raw["state_dir"])
    config = RouterConfig(**raw)
    log_file = os.environ.pop(LOG_ENV, None)   # set by `launch`: a rotated file, else stderr
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[RouterLogHandler(Path(log_file))] if log_file else None)
    from weave_fdp.router.daemon import run_foreground

    try:
        run_foreground(config)
    except FdpError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

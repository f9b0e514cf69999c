"""Background tasks of the router's parts: stopped the one way."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it is gone; what it raised on the
    way out was its own business (it logs what matters), so stop never fails because of it."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass

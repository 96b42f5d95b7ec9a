"""What every long-running service does the same way: wait unless told to stop."""

from __future__ import annotations

import asyncio


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stopping` is set meanwhile."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        pass

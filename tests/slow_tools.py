"""A tool that takes its time (`BOT_TOOLS=tests.slow_tools`): a Realtime session can drop
while it runs."""

from __future__ import annotations

import asyncio


async def slow_lookup(order_id: str) -> dict[str, object]:
    """Look up an order, slowly.

    Args:
        order_id: The order number.
    """
    await asyncio.sleep(1.0)
    return {"found": True, "order_id": order_id, "status": "shipped"}

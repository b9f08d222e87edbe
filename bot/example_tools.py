"""Example custom tools (`BOT_TOOLS=bot.example_tools`): order status from a small table."""

from __future__ import annotations

from typing import Final

_ORDERS: Final[dict[str, dict[str, str | None]]] = {
    "4417": {"status": "shipped", "carrier": "UPS", "eta": "Friday"},
    "5120": {"status": "processing", "carrier": None, "eta": "next week"},
    "6001": {"status": "delivered", "carrier": "USPS", "eta": None},
}


async def get_order_status(order_id: str) -> dict[str, object]:
    """Look up the status of a customer's order.

    Args:
        order_id: The order number the caller gives, digits only.
    """
    order = _ORDERS.get(order_id.strip().lstrip("#"))
    if order is None:
        return {"found": False, "order_id": order_id}
    return {"found": True, "order_id": order_id, **order}

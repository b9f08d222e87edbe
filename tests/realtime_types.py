"""The openai SDK's Realtime server event models, by `type`, for both dialects."""

from __future__ import annotations

import typing
from typing import Any

from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GaEvent

try:
    from openai.types.beta.realtime.realtime_server_event import (
        RealtimeServerEvent as BetaEvent,
    )
except ImportError:  # pragma: no cover - depends on the SDK version
    BetaEvent = None


ORDER_TOOL = {
    "type": "function",
    "name": "get_order_status",
    "description": "Look up an order.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


def _by_type(union: Any) -> dict[str, Any]:
    """The union is not discriminated: index its members by their `type` literal."""
    if typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    models = {}
    for model in typing.get_args(union):
        models[typing.get_args(model.model_fields["type"].annotation)[0]] = model
    return models


MODELS: dict[str, dict[str, Any]] = {
    "ga": _by_type(GaEvent),
    "beta": _by_type(BetaEvent) if BetaEvent is not None else {},
}


def validate(event: dict[str, Any], dialect: str) -> None:
    model = MODELS[dialect].get(event["type"])
    assert model is not None, f"the {dialect} SDK has no server event {event['type']!r}"
    model.model_validate(event)


async def collect(conn: Any, dialect: str, until: str = "response.done") -> list[dict[str, Any]]:
    """Server events from an SDK connection, each validated, up to one of type `until`."""
    import asyncio
    import json

    events = []
    while True:
        raw = json.loads(await asyncio.wait_for(conn.recv_bytes(), 5))
        validate(raw, dialect)
        events.append(raw)
        if raw["type"] == until:
            return events


async def ask(conn: Any, text: str, dialect: str = "ga") -> list[dict[str, Any]]:
    """Say `text` as the user and return the events of the response, validated."""
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()
    return await collect(conn, dialect)

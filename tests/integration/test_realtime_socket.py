"""The Realtime client (picows) against a plain `websockets` server on loopback: the frames a
provider may send that the fake Realtime server does not."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import websockets

from bot.call.channels import ChannelClosed
from bot.call.realtime_socket import open_realtime
from bot.core.realtime import events as rt
from tests.conftest import settings_from


async def serve_once(script: list[object]) -> tuple[websockets.Server, asyncio.Queue[str]]:
    """A server that reads the session.update, then sends `script` (a list of fragments is
    one fragmented message; an int is a close code) and keeps reading."""
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handle(ws: websockets.ServerConnection) -> None:
        received.put_nowait(str(await ws.recv()))
        for item in script:
            if isinstance(item, int):
                await ws.close(item, json.dumps({"error": {"message": "going away now"}}))
                return
            await ws.send(item)  # type: ignore[arg-type]
        async for message in ws:
            received.put_nowait(str(message))

    server = await websockets.serve(handle, "127.0.0.1", 0)
    return server, received


async def test_a_fragmented_delta_arrives_whole_and_a_close_reason_is_read(
    base_env: dict[str, str],
) -> None:
    audio = base64.b64encode(bytes(range(256)) * 40).decode()
    delta = json.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "r1",
            "item_id": "i1",
            "output_index": 0,
            "content_index": 0,
            "delta": audio,
        }
    )
    fragments = [delta[i : i + 1000] for i in range(0, len(delta), 1000)]
    server, received = await serve_once([fragments, 4000])
    port = server.sockets[0].getsockname()[1]
    async with server:
        settings = settings_from(base_env, REALTIME_URL=f"ws://127.0.0.1:{port}/v1/realtime")
        channel = await open_realtime(settings.realtime, rt.SessionConfig(instructions="x"))
        assert json.loads(await received.get())["type"] == "session.update"
        event = await channel.receive()
        assert isinstance(event, rt.AudioDelta) and event.audio == bytes(range(256)) * 40
        with pytest.raises(ChannelClosed) as closed:
            await channel.receive()
        assert closed.value.reason == "Realtime socket closed with code 4000: going away now"
        with pytest.raises(ChannelClosed):
            await channel.send(rt.AppendAudio(b"\xff" * 160))
        await channel.close()

"""The local backend over a WebSocket at `/v1/realtime`, for any Realtime client: a route on
the bridge's app, or `bot realtime-server` alone. Loopback clients only."""

from __future__ import annotations

from typing import Final

from quart import Blueprint, Quart, websocket
from quart.typing import ResponseReturnValue

from bot.core.ids import is_loopback
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import ServerEvent
from bot.core.realtime.server import ClientEventError, decode_client_event, encode_server_event
from bot.localrt.providers import Providers
from bot.localrt.runner import LocalSession

__all__ = ["LOCAL_REALTIME_PATH", "create_realtime_app", "realtime_blueprint"]

LOCAL_REALTIME_PATH: Final = "/v1/realtime"


def realtime_blueprint(providers: Providers) -> Blueprint:
    blueprint = Blueprint("local_realtime", __name__)

    @blueprint.websocket(LOCAL_REALTIME_PATH)
    async def local_realtime() -> ResponseReturnValue | None:
        """The Realtime-compatible backend built from separate STT, chat and TTS services."""
        if not is_loopback(websocket.remote_addr):
            return "the local Realtime backend serves this machine only", 403
        beta = "realtime=v1" in websocket.headers.get("OpenAI-Beta", "")
        dialect = Dialect.BETA if beta else Dialect.GA
        await websocket.accept()
        ws = websocket._get_current_object()
        sequence = 0

        async def send(event: ServerEvent) -> None:
            nonlocal sequence
            sequence += 1
            text = encode_server_event(event, dialect, f"event_{sequence:08d}")
            if text is not None:
                await ws.send(text)

        local = LocalSession(providers, send, model=websocket.args.get("model", "local"))
        try:
            await local.open()
            while True:  # until the client goes away: Quart then cancels this task
                frame = await ws.receive()
                try:
                    event = decode_client_event(frame)
                except ClientEventError as exc:
                    await send(exc.as_event())
                    continue
                await local.receive(event)
        finally:
            local.stop()

    return blueprint


def create_realtime_app(providers: Providers) -> Quart:
    """`bot realtime-server`: only the local Realtime backend."""
    app = Quart(__name__)
    app.register_blueprint(realtime_blueprint(providers))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app

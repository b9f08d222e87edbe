"""The local backend over a WebSocket at `/v1/realtime`, for any Realtime client: a route on
the bridge's app, or `bot realtime-server` alone.

A client must hold the backend's key and be on this machine. "On this machine" alone is not
enough: behind a tunnel or a reverse proxy on the same host (cloudflared, ngrok, Caddy)
every stranger is 127.0.0.1. So a request that carries any forwarding header, which such a
proxy adds, is refused as well.
"""

from __future__ import annotations

import hmac
from typing import Final

from quart import Blueprint, Quart, websocket
from quart.typing import ResponseReturnValue
from werkzeug.datastructures import Headers

from bot.core.ids import is_loopback
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import ServerEvent
from bot.core.realtime.server import ClientEventError, decode_client_event, encode_server_event
from bot.localrt.providers import Providers
from bot.localrt.runner import LocalSession

__all__ = ["LOCAL_REALTIME_PATH", "create_realtime_app", "realtime_blueprint"]

LOCAL_REALTIME_PATH: Final = "/v1/realtime"
FORWARDING_HEADERS: Final = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "CF-Connecting-IP",
    "True-Client-IP",
    "X-Client-IP",
)
_KEY_SUBPROTOCOL: Final = "openai-insecure-api-key."


def presented_key(headers: Headers, subprotocols: list[str]) -> str:
    """The key a Realtime client sent, however it sent it; "" if none."""
    authorization = headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    if api_key := headers.get("api-key", ""):
        return api_key.strip()
    for protocol in subprotocols:
        if protocol.startswith(_KEY_SUBPROTOCOL):
            return protocol[len(_KEY_SUBPROTOCOL) :]
    return ""


def realtime_blueprint(providers: Providers, key: str) -> Blueprint:
    """`/v1/realtime` for clients on this machine that present `key`."""
    blueprint = Blueprint("local_realtime", __name__)
    expected = key.encode()

    @blueprint.websocket(LOCAL_REALTIME_PATH)
    async def local_realtime() -> ResponseReturnValue | None:
        """The Realtime-compatible backend built from separate STT, chat and TTS services."""
        if not is_loopback(websocket.remote_addr):
            return "the local Realtime backend serves this machine only", 403
        if any(name in websocket.headers for name in FORWARDING_HEADERS):
            return "the local Realtime backend is not served through a proxy", 403
        presented = presented_key(websocket.headers, list(websocket.requested_subprotocols))
        if not hmac.compare_digest(presented.encode(), expected):
            return "a key is needed: LOCAL_REALTIME_KEY, or the local-realtime-key file", 401
        beta = "realtime=v1" in websocket.headers.get("OpenAI-Beta", "")
        dialect = Dialect.BETA if beta else Dialect.GA
        chosen = [p for p in websocket.requested_subprotocols if p == "realtime"]
        await websocket.accept(subprotocol=chosen[0] if chosen else None)
        ws = websocket._get_current_object()
        sequence = 0

        async def send(event: ServerEvent) -> None:
            nonlocal sequence
            sequence += 1
            text = encode_server_event(event, dialect, f"event_{sequence:08d}")
            if text is not None:
                await ws.send(text)

        local = LocalSession(
            providers,
            send,
            model=websocket.args.get("model", "local"),
            transcribe_only=websocket.args.get("intent") == "transcription",
        )
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


def create_realtime_app(providers: Providers, key: str) -> Quart:
    """`bot realtime-server`: only the local Realtime backend."""
    app = Quart(__name__)
    app.register_blueprint(realtime_blueprint(providers, key))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app

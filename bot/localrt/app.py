"""The `/v1/realtime` route, for the bridge's app and for `bot realtime-server` alone."""

from __future__ import annotations

import ipaddress
from typing import Final

from quart import Blueprint, Quart, websocket
from quart.typing import ResponseReturnValue

from bot.localrt.providers import Providers
from bot.localrt.server import serve_realtime

__all__ = ["LOCAL_REALTIME_PATH", "create_realtime_app", "realtime_blueprint"]

LOCAL_REALTIME_PATH: Final = "/v1/realtime"


def realtime_blueprint(providers: Providers) -> Blueprint:
    blueprint = Blueprint("local_realtime", __name__)

    @blueprint.websocket(LOCAL_REALTIME_PATH)
    async def local_realtime() -> ResponseReturnValue | None:
        """The Realtime-compatible backend built from separate STT, chat and TTS services."""
        if not _is_loopback(websocket.remote_addr):
            return "the local Realtime backend serves this machine only", 403
        beta = "realtime=v1" in websocket.headers.get("OpenAI-Beta", "")
        await websocket.accept()
        ws = websocket._get_current_object()
        await serve_realtime(
            ws.receive,
            ws.send,
            providers,
            model=websocket.args.get("model", "local"),
            dialect="beta" if beta else "ga",
        )
        return None

    return blueprint


def create_realtime_app(providers: Providers) -> Quart:
    """`bot realtime-server`: only the local Realtime backend."""
    app = Quart(__name__)
    app.register_blueprint(realtime_blueprint(providers))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

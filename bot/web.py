"""The Quart app: Twilio's voice webhook (TwiML) and the Media Streams WebSocket."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from quart import Quart, Response, request, websocket
from quart.wrappers.base import ClientDisconnectedError
from quart.wrappers.websocket import Websocket
from twilio.request_validator import RequestValidator

from bot.bridge import CallRegistry, ChannelClosed, RealtimeDialer, run_call
from bot.config import Settings, load_local_secret
from bot.realtime_client import open_realtime
from bot.sansio.tokens import issue_stream_token
from bot.sansio.twiml import render_connect_stream

__all__ = ["create_app", "twiml_dir"]

logger = logging.getLogger(__name__)

VOICE_PATH: Final = "/twilio/voice"
MEDIA_PATH: Final = "/twilio/media"
_CALL_SID = re.compile(r"^CA[0-9a-zA-Z]{32}$")


def twiml_dir() -> Path:
    """`twiml/` at the repository root, or its copy inside an installed wheel."""
    packaged = Path(__file__).parent / "_twiml"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "twiml"


def public_base(settings: Settings) -> str:
    if settings.public_url is not None:
        return settings.public_url
    return f"http://127.0.0.1:{settings.port}"


def stream_url(settings: Settings) -> str:
    base = urlsplit(public_base(settings))
    scheme = "wss" if base.scheme == "https" else "ws"
    return f"{scheme}://{base.netloc}{MEDIA_PATH}"


class _QuartChannel:
    """Adapts Quart's websocket to the bridge's `TwilioChannel`."""

    def __init__(self, ws: Websocket) -> None:
        self._ws = ws

    async def receive(self) -> str | bytes:
        return await self._ws.receive()

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ClientDisconnectedError as exc:
            raise ChannelClosed from exc

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def create_app(
    settings: Settings | None = None,
    *,
    signing_secret: str | None = None,
    dial: RealtimeDialer = open_realtime,
) -> Quart:
    """Build the app. Tests pass settings directly; production reads them from the environment."""
    if settings is None:
        settings = Settings.from_env(os.environ)
    if signing_secret is None:
        if settings.twilio_auth_token is not None:
            signing_secret = settings.twilio_auth_token.reveal()
        else:
            secret = load_local_secret(settings.data_dir)
            assert secret is not None
            signing_secret = secret
    app = Quart(__name__)
    registry = CallRegistry(settings, signing_secret, dial)
    validator = RequestValidator(signing_secret)
    template = (twiml_dir() / "connect_stream.xml").read_text()
    app.extensions["bot.registry"] = registry

    def voice_urls() -> list[str]:
        urls = [public_base(settings) + VOICE_PATH]
        if settings.local_mode and settings.public_url is None:
            urls.append(f"http://localhost:{settings.port}{VOICE_PATH}")
        query = request.query_string.decode("latin-1")
        return [url + "?" + query if query else url for url in urls]

    @app.after_serving
    async def _close_registry() -> None:
        await registry.close()

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "active_calls": registry.active_calls}

    @app.post(VOICE_PATH)
    async def voice() -> Response | tuple[str, int]:
        form = await request.form
        signature = request.headers.get("X-Twilio-Signature", "")
        if not any(validator.validate(url, form, signature) for url in voice_urls()):
            logger.warning("voice webhook rejected: bad or missing X-Twilio-Signature")
            return "invalid signature", 403
        call_sid = form.get("CallSid", "")
        if not _CALL_SID.match(call_sid):
            return "CallSid missing or malformed", 400
        parameters = {
            "token": issue_stream_token(
                signing_secret, call_sid, time.time(), settings.stream_token_ttl_s
            ),
            "from": form.get("From", "")[:64],
            "to": form.get("To", "")[:64],
            "direction": form.get("Direction", "inbound")[:32],
        }
        registry.prewarm(call_sid)
        logger.info("[%s -] incoming call from %s: TwiML sent", call_sid, parameters["from"])
        twiml = render_connect_stream(
            template, stream_url(settings), parameters, settings.fallback_message
        )
        return Response(twiml, content_type="text/xml")

    @app.websocket(MEDIA_PATH)
    async def media() -> tuple[str, int] | None:
        signature = websocket.headers.get("X-Twilio-Signature")
        if signature is not None:
            url = stream_url(settings)
            candidates = [url, url + "/"]
            if not any(validator.validate(candidate, {}, signature) for candidate in candidates):
                logger.warning("media stream rejected: bad X-Twilio-Signature on upgrade")
                return "invalid signature", 403
        await websocket.accept()
        await run_call(_QuartChannel(websocket._get_current_object()), registry)
        return None

    return app

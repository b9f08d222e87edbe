"""The Quart app: Twilio's voice webhook (TwiML) and the Media Streams WebSocket."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import importlib.util
import logging
import os
import re
import time
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Quart, Response, abort, request, websocket
from quart.wrappers.base import ClientDisconnectedError
from quart.wrappers.websocket import Websocket
from sqlalchemy.exc import SQLAlchemyError
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from bot.bridge import CallRegistry, ChannelClosed, RealtimeDialer, run_call
from bot.calllog import CallLog
from bot.config import Settings, load_local_secret
from bot.errors import ConfigError
from bot.localrt.app import LOCAL_REALTIME_PATH, realtime_blueprint
from bot.localrt.demo_agent import DemoAgent
from bot.localrt.offline import (
    EspeakVoice,
    PiperVoice,
    WebRtcVad,
    WhisperTranscriber,
    offline_available,
)
from bot.localrt.openai_compat import CompatibleChat, CompatibleSpeech, CompatibleTranscriber
from bot.localrt.providers import ChatModel, Providers, SpeechToText, TextToSpeech
from bot.realtime_client import open_realtime
from bot.recorder import prune_recordings
from bot.review import review
from bot.sansio.tokens import issue_stream_token
from bot.sansio.twiml import render_connect_stream
from bot.storage import CallStore, utcnow
from bot.tools import load_tools
from bot.twilio_rest import TwilioRest

__all__ = ["create_app", "twiml_dir"]

logger = logging.getLogger(__name__)

VOICE_PATH: Final = "/twilio/voice"
MEDIA_PATH: Final = "/twilio/media"
AMD_PATH: Final = "/twilio/amd"
OUTBOUND_PARAMETERS: Final = frozenset({"instructions", "greeting", "amd", "campaign"})
STATUS_PATH: Final = "/twilio/status"
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
    local_providers: Providers | None = None,
) -> Quart:
    """Build the app. Tests pass settings directly; production reads them from the environment.

    The call log's database is opened (and migrated) when serving starts; the call registry
    lives in `app.extensions["bot.registry"]` from then on.
    """
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
    app.config["BOT_SETTINGS"] = settings
    app.secret_key = hmac.new(signing_secret.encode(), b"review-session", hashlib.sha256).digest()
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=public_base(settings).startswith("https://"),
    )
    app.register_blueprint(review)
    tools = load_tools(settings.bot_tools)  # a broken tool module stops the start, clearly
    if settings.local_backend:
        local_providers = local_providers or offline_providers(settings)
        settings = dataclasses.replace(
            settings,
            realtime_url=f"ws://127.0.0.1:{settings.port}{LOCAL_REALTIME_PATH}",
            realtime_model="local",
            transcription_model="local",
        )
        app.config["BOT_SETTINGS"] = settings
    if local_providers is not None:
        app.register_blueprint(realtime_blueprint(local_providers))
    validator = RequestValidator(signing_secret)
    template = (twiml_dir() / "connect_stream.xml").read_text()
    background: set[asyncio.Task[None]] = set()

    def registry() -> CallRegistry:
        found: CallRegistry = app.extensions["bot.registry"]
        return found

    def signed(urls: list[str], params: object) -> bool:
        signature = request.headers.get("X-Twilio-Signature", "")
        return any(validator.validate(url, params, signature) for url in urls)

    def webhook_urls(path: str) -> list[str]:
        urls = [public_base(settings) + path]
        if settings.local_mode and settings.public_url is None:
            urls.append(f"http://localhost:{settings.port}{path}")
        query = request.query_string.decode("latin-1")
        return [url + "?" + query if query else url for url in urls]

    @app.before_serving
    async def _open() -> None:
        store = await CallStore.open(settings.database)
        call_log = CallLog(store)
        call_log.start()
        rest = None
        if settings.twilio_account_sid and settings.twilio_auth_token:
            rest = TwilioRest(
                settings.twilio_account_sid,
                settings.twilio_auth_token.reveal(),
                settings.twilio_api_url,
            )
        app.extensions["bot.store"] = store
        app.extensions["bot.registry"] = CallRegistry(
            settings, signing_secret, dial, call_log, rest=rest, tools=tools
        )
        if settings.record_audio and settings.recording_retention_days > 0:
            background.add(asyncio.create_task(_prune_periodically(store)))

    async def _prune_periodically(store: CallStore) -> None:
        while True:
            try:
                await prune_recordings(store, settings.recording_retention_days)
            except (OSError, SQLAlchemyError) as exc:
                logger.warning("recording retention: %s", type(exc).__name__)
            await asyncio.sleep(6 * 3600)

    @app.after_serving
    async def _close() -> None:
        for task in background:
            task.cancel()
        calls = registry()
        await calls.close()
        if calls.rest is not None:
            await calls.rest.close()
        await calls.call_log.stop()
        await app.extensions["bot.store"].close()

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "active_calls": registry().active_calls}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(registry().metrics.render(), content_type=CONTENT_TYPE_LATEST)

    async def twilio_form(path: str, what: str) -> tuple[MultiDict[str, str], str]:
        """The form of a Twilio webhook, once its signature and CallSid are checked."""
        form = await request.form
        if not signed(webhook_urls(path), form):
            logger.warning("%s rejected: bad or missing X-Twilio-Signature", what)
            abort(403, "invalid signature")
        call_sid = form.get("CallSid", "")
        if not _CALL_SID.match(call_sid):
            abort(400, "CallSid missing or malformed")
        return form, call_sid

    @app.post(VOICE_PATH)
    async def voice() -> Response:
        form, call_sid = await twilio_form(VOICE_PATH, "voice webhook")
        parameters = {
            "token": issue_stream_token(
                signing_secret, call_sid, time.time(), settings.stream_token_ttl_s
            ),
            "from": form.get("From", "")[:64],
            "to": form.get("To", "")[:64],
            "direction": form.get("Direction", "inbound")[:32],
        }
        # Outbound calls carry their per-call settings in the (signed) webhook URL.
        for name, value in request.args.items():
            if name in OUTBOUND_PARAMETERS or name.startswith("var_"):
                parameters[name] = value
        registry().prewarm(call_sid)
        registry().call_log.call(
            call_sid,
            started_at=utcnow(),
            direction=parameters["direction"],
            from_number=parameters["from"] or None,
            to_number=parameters["to"] or None,
        )
        logger.info("[%s -] incoming call from %s: TwiML sent", call_sid, parameters["from"])
        twiml = render_connect_stream(
            template, stream_url(settings), parameters, settings.fallback_message
        )
        return Response(twiml, content_type="text/xml")

    @app.post(AMD_PATH)
    async def amd() -> tuple[str, int]:
        """Twilio's asynchronous answering-machine detection verdict."""
        form, call_sid = await twilio_form(AMD_PATH, "AMD callback")
        answered_by = form.get("AnsweredBy", "unknown")[:32]
        logger.info("[%s -] answered by %s", call_sid, answered_by)
        registry().call_log.call(call_sid, answered_by=answered_by)
        registry().deliver_verdict(call_sid, answered_by)
        return "", 204

    @app.post(STATUS_PATH)
    async def call_status() -> tuple[str, int]:
        """Twilio's call status callback: the call's final status and duration."""
        form, call_sid = await twilio_form(STATUS_PATH, "status callback")
        fields: dict[str, object] = {"twilio_status": form.get("CallStatus", "")[:32] or None}
        duration = form.get("CallDuration", "")
        if duration.isdigit():
            fields["twilio_duration_s"] = int(duration)
        registry().call_log.call(call_sid, **fields)
        return "", 204

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
        await run_call(_QuartChannel(websocket._get_current_object()), registry())
        return None

    return app


def offline_providers(settings: Settings) -> Providers:
    """The local backend's services: OpenAI-compatible APIs where configured, else offline
    Whisper, the rules-based demo agent and Piper."""
    key = settings.local_api_key.reveal() if settings.local_api_key else None
    needs_offline = settings.local_stt_url is None or settings.local_tts_url is None
    missing = offline_available() if needs_offline else None
    if missing is not None:
        raise ConfigError(
            [
                "the local backend's offline extra is missing "
                f"({missing}): run scripts/serve, or pip install -e '.[offline]'"
            ]
        )
    stt: SpeechToText = (
        CompatibleTranscriber(settings.local_stt_url, settings.local_stt_model, key)
        if settings.local_stt_url
        else WhisperTranscriber()
    )
    chat: ChatModel = (
        CompatibleChat(settings.local_llm_url, settings.local_llm_model, key)
        if settings.local_llm_url
        else DemoAgent()
    )
    tts: TextToSpeech = (
        CompatibleSpeech(
            settings.local_tts_url, settings.local_tts_model, key, settings.local_tts_voice
        )
        if settings.local_tts_url
        else EspeakVoice()
        if settings.local_tts == "espeak"
        else PiperVoice()
    )
    has_webrtcvad = importlib.util.find_spec("webrtcvad") is not None
    return Providers(stt, chat, tts, WebRtcVad if has_webrtcvad else None)

"""The Quart app, assembled from the features: Twilio's routes and the live calls, the review
of the call log, the local backend, and what they share (database, REST client, metrics)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Quart, Response
from sqlalchemy.exc import SQLAlchemyError

from bot.call.admission import Admission
from bot.call.channels import RealtimeChannel
from bot.call.handover import HANDOVER_PARAMETER, Handover
from bot.call.journal import SessionLabel
from bot.call.loop import CallServices
from bot.call.metrics import Metrics
from bot.call.realtime_socket import open_realtime
from bot.call.registry import CallRegistry, Dialer
from bot.call.stream_tokens import StreamTokens
from bot.call.tools import builtin_schemas, load_tools
from bot.call.twilio_actions import TwilioActions
from bot.call.twilio_socket import AsgiApp, MediaGate, route_websockets
from bot.call.web import (
    MEDIA_PATH,
    TwilioMediaGate,
    call_blueprint,
    media_endpoint,
    stream_url,
    twiml_dir,
)
from bot.calllog.retention import prune_recordings
from bot.calllog.review import review_blueprint
from bot.calllog.writer import CallLog
from bot.cluster.bus import Cluster, ClusterTimings
from bot.config import (
    RealtimeSettings,
    Settings,
    environment,
    load_local_secret,
    local_realtime_key,
)
from bot.core.realtime.events import (
    AudioFormat,
    Eagerness,
    NoiseReduction,
    SessionConfig,
    Transcription,
    TurnDetection,
)
from bot.listen.summary import Summarizer
from bot.listen.transcriber import make_transcriber
from bot.localrt.inprocess import LocalRealtime
from bot.localrt.openai_compat import CompatibleChat
from bot.localrt.providers import Providers
from bot.localrt.web import realtime_blueprint
from bot.store.calls import CallRecords
from bot.store.store import Store
from bot.twilio_rest import TwilioRest

__all__ = ["call_services", "create_app", "media_gate", "session_config"]

logger = logging.getLogger(__name__)

RETENTION_CHECK_S = 6 * 3600
MAX_REQUEST_BYTES = 64 * 1024


def session_config(
    realtime: RealtimeSettings,
    instructions: str,
    tools: tuple[Mapping[str, object], ...],
    audio: AudioFormat,
    bridge_owns_responses: bool = False,
) -> SessionConfig:
    """The session every call asks for. With `bridge_owns_responses` (pause, then decide)
    the server neither answers a turn nor cancels an answer by itself."""
    transcription = realtime.transcription_model
    return SessionConfig(
        instructions=instructions,
        voice=realtime.voice,
        input_format=audio,
        output_format=audio,
        turn_detection=TurnDetection(
            threshold=realtime.vad_threshold,
            prefix_padding_ms=realtime.vad_prefix_ms,
            silence_duration_ms=realtime.vad_silence_ms,
            semantic=realtime.turn_detection == "semantic_vad",
            eagerness=cast(Eagerness, realtime.vad_eagerness),
            create_response=not bridge_owns_responses,
            interrupt_response=not bridge_owns_responses,
        ),
        noise_reduction=(
            None
            if realtime.noise_reduction == "off"
            else cast(NoiseReduction, realtime.noise_reduction)
        ),
        transcription=Transcription(transcription) if transcription else None,
        tools=tools or None,
        speak=True,
    )


def _summarizer(settings: Settings, call_log: CallLog) -> Summarizer | None:
    listen = settings.listen
    if listen.summary_model is None:
        return None
    key = listen.summary_api_key.reveal() if listen.summary_api_key else None
    return Summarizer(CompatibleChat(listen.summary_url, listen.summary_model, key), call_log)


@dataclass
class _Running:
    """What exists only while the app serves."""

    store: Store
    call_log: CallLog
    services: CallServices
    rest: TwilioRest | None
    background: list[asyncio.Task[None]]


def create_app(
    settings: Settings | None = None,
    *,
    signing_secret: str | None = None,
    local_providers: Providers | None = None,
) -> Quart:
    """Build the app. The database opens (and migrates) when serving starts.

    `local_providers` replaces the local backend's services (tests fake them); they also
    serve `/v1/realtime` when calls go to a hosted model.
    """
    if settings is None:
        settings = Settings.from_env(environment())
    if signing_secret is None:
        token = settings.twilio.auth_token
        signing_secret = token.reveal() if token else load_local_secret(settings.server.data_dir)
        assert signing_secret is not None
    app = Quart("bot")
    app.secret_key = hmac.new(signing_secret.encode(), b"review-session", hashlib.sha256).digest()
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,  # webhooks and the login form are small
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.server.base_url.startswith("https://"),
    )
    tools = load_tools(settings.call.tools_module)  # a broken tool module stops the start
    schemas = tuple(builtin_schemas(transfer=settings.call.transfer_to is not None)) + tuple(
        tool.schema for tool in tools.values()
    )
    realtime = settings.realtime
    dial: Dialer
    session: SessionConfig
    confirming = settings.call.interruptions == "confirm"
    local_realtime: LocalRealtime | None = None
    if realtime.local:
        from bot.localrt.services import local_providers as offline

        providers = local_providers or offline(settings.local)
        local = local_realtime = LocalRealtime(providers)
        audio = AudioFormat.G711_ULAW  # no resampling on the way in or out
        # The local backend always transcribes: a text model cannot answer what it cannot read.
        local_session = session = replace(
            session_config(realtime, settings.call.instructions, schemas, audio, confirming),
            transcription=Transcription("local"),
        )

        async def dial_local() -> RealtimeChannel:
            return await local.open(local_session)

        dial = dial_local
        label = SessionLabel("local", "local", "in-process", audio.value)
        local_providers = providers
    else:
        audio = realtime.audio
        hosted_session = session = session_config(
            realtime, settings.call.instructions, schemas, audio, confirming
        )

        async def dial_hosted() -> RealtimeChannel:
            return await open_realtime(realtime, hosted_session)

        dial = dial_hosted
        label = SessionLabel(
            urlsplit(realtime.url).hostname, realtime.model, realtime.dialect.value, audio.value
        )
    if local_providers is not None:
        key = local_realtime_key(settings.local, settings.server.data_dir)
        app.register_blueprint(realtime_blueprint(local_providers, key))

    state: dict[str, _Running] = {}

    def running() -> _Running:
        return state["running"]

    app.register_blueprint(
        call_blueprint(
            settings.server,
            settings.twilio,
            settings.listen,
            settings.call.fallback_message,
            signing_secret,
            lambda: running().services,
        )
    )
    app.register_blueprint(
        review_blueprint(
            settings.calllog,
            lambda: running().store.calls,
            app.secret_key,
            lambda: running().services.cluster.control,
        )
    )
    gate = TwilioMediaGate(settings.server, signing_secret, lambda: running().services)
    app.extensions["bot.media"] = gate  # `bot serve` takes the media socket itself
    media = media_endpoint(gate)
    app.asgi_app = route_websockets(  # type: ignore[method-assign,assignment]
        cast(AsgiApp, app.asgi_app), {MEDIA_PATH: media, MEDIA_PATH + "/": media}
    )

    @app.before_serving
    async def open_resources() -> None:
        store = await Store.open(settings.calllog.database)
        call_log = CallLog(store.calls)
        call_log.start()
        twilio = settings.twilio
        rest = None
        if twilio.account_sid and twilio.auth_token:
            rest = TwilioRest(twilio.account_sid, twilio.auth_token.reveal(), twilio.api_url)
        registry = CallRegistry(dial)
        calllog = settings.calllog
        cluster = Cluster(
            registry,
            store.cluster,
            calllog.database,
            settings.call.max_calls_total,
            ClusterTimings(ringing_for_s=twilio.stream_token_ttl_s),
        )
        await cluster.start()

        async def claim(call_sid: str, parameters: Mapping[str, str]) -> str | None:
            if not cluster.shared:  # alone: another instance may have logged a stream
                if await store.calls.had_stream(call_sid):
                    return "this call already had a stream (call log)"
                return None
            result = await cluster.claim(call_sid, parameters.get(HANDOVER_PARAMETER))
            if not result.claimed:
                return "another stream has this call (another worker or instance)"
            if result.answered_by is not None:  # the verdict came before the stream
                registry.deliver_verdict(call_sid, result.answered_by)
            return None

        services = CallServices(
            registry=registry,
            admission=Admission(
                StreamTokens(signing_secret, twilio.stream_token_ttl_s),
                twilio.account_sid,
                claim=claim,
            ),
            settings=settings.call,
            audio=audio,
            label=label,
            call_log=call_log,
            metrics=Metrics(registry.live_stats, call_log),
            actions=TwilioActions(rest, settings.call),
            tools=tools,
            recordings=calllog.recordings_path if calllog.record_audio else None,
            cluster=cluster,
            handover=Handover(
                rest,
                signing_secret,
                twilio.stream_token_ttl_s,
                stream_url(settings.server.base_url),
                (twiml_dir() / "connect_stream.xml").read_text(),
                settings.call.fallback_message,
                settings.call.handover_wait_s,
            )
            if rest is not None and cluster.shared and settings.call.handover
            else None,
            session=session,
            transcriber=make_transcriber(settings, local_realtime),
            transcribe_ai_calls=settings.listen.ai_calls,
            summarize=_summarizer(settings, call_log),
        )
        background = []
        if calllog.record_audio and calllog.retention_days > 0:
            prune = _prune_periodically(
                store.calls, calllog.retention_days, calllog.recordings_path
            )
            background.append(asyncio.create_task(prune))
        state["running"] = _Running(store, call_log, services, rest, background)

    @app.after_serving
    async def close_resources() -> None:
        current = running()
        for task in current.background:
            task.cancel()
        await current.services.registry.close()
        await current.services.cluster.stop()
        if current.rest is not None:
            await current.rest.close()
        await current.call_log.stop()
        await current.store.close()

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "active_calls": len(running().services.registry.calls)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(running().services.metrics.render(), content_type=CONTENT_TYPE_LATEST)

    app.extensions["bot.calls"] = lambda: running().services
    return app


def media_gate(app: Quart) -> MediaGate | None:
    """The app's door to the media socket, for a server that takes the socket itself; None
    for an app without calls (the local backend served alone)."""
    gate: MediaGate | None = app.extensions.get("bot.media")
    return gate


def call_services(app: Quart) -> CallServices:
    """What the calls of a serving app share, its registry of live calls included."""
    services: Callable[[], CallServices] = app.extensions["bot.calls"]
    return services()


async def _prune_periodically(records: CallRecords, retention_days: int, folder: Path) -> None:
    while True:
        try:
            await prune_recordings(records, retention_days, folder)
        except (OSError, SQLAlchemyError) as exc:
            logger.warning("recording retention: %s", type(exc).__name__)
        await asyncio.sleep(RETENTION_CHECK_S)

"""Where a listened call's transcription sessions come from: a hosted endpoint opened with
`?intent=transcription`, or the local backend (offline Whisper) in this process."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.call.channels import RealtimeChannel
from bot.call.journal import SessionLabel
from bot.call.realtime_socket import open_realtime
from bot.config import Settings
from bot.core.realtime.events import (
    AudioFormat,
    NoiseReduction,
    SessionConfig,
    Transcription,
    TurnDetection,
)
from bot.listen.stream import Transcriber

if TYPE_CHECKING:
    from bot.localrt.inprocess import LocalRealtime

__all__ = ["make_transcriber", "transcription_config", "transcription_url"]


def transcription_url(realtime_url: str) -> str:
    """A Realtime URL with `intent=transcription` and without a model: a model in the URL
    makes a conversation session, which refuses the transcription settings."""
    parts = urlsplit(realtime_url)
    query = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name not in ("model", "deployment", "intent")
    ]
    query.append(("intent", "transcription"))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def transcription_config(settings: Settings, audio: AudioFormat) -> SessionConfig:
    listen, realtime = settings.listen, settings.realtime
    return SessionConfig(
        transcribe_only=True,
        input_format=audio,
        transcription=Transcription(listen.model, listen.prompt, listen.language),
        turn_detection="off"
        if listen.turns == "manual"
        else TurnDetection(
            threshold=realtime.vad_threshold,
            prefix_padding_ms=realtime.vad_prefix_ms,
            silence_duration_ms=realtime.vad_silence_ms,
            create_response=False,
            interrupt_response=False,
        ),
        noise_reduction=None
        if realtime.noise_reduction == "off"
        else cast(NoiseReduction, realtime.noise_reduction),
    )


def make_transcriber(settings: Settings, local: LocalRealtime | None) -> Transcriber:
    """Hosted unless the calls use the local backend and no `TRANSCRIBE_URL` is set."""
    listen, realtime = settings.listen, settings.realtime
    manual = listen.turns == "manual"
    reconnect_s = settings.call.reconnect_s
    if local is not None and listen.transcribe_url is None:
        config = replace(
            transcription_config(settings, AudioFormat.G711_ULAW),
            transcription=Transcription("local", listen.prompt, listen.language),
        )

        async def open_local() -> RealtimeChannel:
            return await local.open(config)

        label = SessionLabel("local", "local", "in-process", "listen")
        return Transcriber(open_local, False, manual, label, reconnect_s)
    url = listen.transcribe_url or transcription_url(realtime.url)
    dialect = listen.transcribe_dialect or realtime.dialect
    endpoint = replace(
        realtime, url=url, model="", dialect=dialect, api_key=listen.api_key or realtime.api_key
    )
    config = transcription_config(settings, listen.audio)

    async def open_hosted() -> RealtimeChannel:
        return await open_realtime(endpoint, config)

    label = SessionLabel(urlsplit(url).hostname, listen.model, dialect.value, "listen")
    pcm16 = listen.audio is AudioFormat.PCM16
    return Transcriber(open_hosted, pcm16, manual, label, reconnect_s)

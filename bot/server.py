"""`bot serve`: the app under Hypercorn, with start-up banner and graceful SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart

from bot.bridge import CallRegistry
from bot.config import Settings
from bot.realtime_client import realtime_url, redact_url
from bot.web import MEDIA_PATH, VOICE_PATH, create_app, public_base

__all__ = ["bind_socket", "hypercorn_config", "serve"]

logger = logging.getLogger("bot.server")

MAX_WEBSOCKET_FRAME_BYTES = 1024 * 1024  # a Twilio frame is ~300 bytes; bigger is abuse


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then refuse new calls and give active ones the grace period."""
    sock = bind_socket(settings.host, settings.port)
    settings = dataclasses.replace(settings, port=sock.getsockname()[1])
    app = create_app(settings)

    base = public_base(settings)
    for warning in settings.warnings:
        logger.warning("%s", warning)
    if settings.local_mode:
        logger.warning(
            "local mode: TWILIO_AUTH_TOKEN is not set, so the server listens on loopback only "
            "and signs with a generated secret in %s (bot simulate reads it)",
            settings.data_dir / "local-secret",
        )
    logger.info(
        "listening on http://%s:%d; Twilio voice webhook: %s%s (stream %s%s)",
        settings.host,
        settings.port,
        base,
        VOICE_PATH,
        base.replace("http", "ws", 1),
        MEDIA_PATH,
    )
    if settings.local_backend:
        logger.info(
            "Realtime: the local backend at ws://127.0.0.1:%d/v1/realtime (speech-to-text %s, "
            "chat %s, text-to-speech %s)",
            settings.port,
            settings.local_stt_url or "Whisper tiny.en offline",
            settings.local_llm_url or "the rules-based demo agent",
            settings.local_tts_url or "Piper offline",
        )
    else:
        logger.info(
            "Realtime: %s (%s dialect, %s audio, %s auth)",
            redact_url(realtime_url(settings)),
            settings.realtime_dialect.value,
            settings.realtime_audio.value,
            settings.realtime_auth,
        )

    asyncio.run(_serve(app, hypercorn_config(sock), settings.shutdown_grace_s))


def hypercorn_config(sock: socket.socket) -> HypercornConfig:
    """Hypercorn serving on an already bound socket (so port 0 works and never races)."""
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.websocket_max_message_size = MAX_WEBSOCKET_FRAME_BYTES
    config.graceful_timeout = 2.0  # after our own grace period has ended the calls
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def _serve(app: Quart, config: HypercornConfig, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        registry: CallRegistry = app.extensions["bot.registry"]
        logger.info(
            "shutting down: no new connections; %d active call(s) get up to %.0f s to finish",
            registry.active_calls,
            grace_s,
        )
        # Calls still running at the deadline are ended politely: the caller hears the
        # fallback message instead of silence.
        loop.call_later(grace_s, registry.end_all_calls, "server shutting down")
        # A second signal means "now".
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, registry.end_all_calls, "server shutting down")

    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)
    logger.info("stopped after %d call(s)", app.extensions["bot.registry"].calls_started)

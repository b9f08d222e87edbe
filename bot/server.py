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

from bot.app import call_services, create_app
from bot.call.realtime_socket import realtime_url, redact_url
from bot.call.web import MEDIA_PATH, VOICE_PATH
from bot.config import Settings

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
    server = settings.server
    sock = bind_socket(server.host, server.port)
    server = dataclasses.replace(server, port=sock.getsockname()[1])  # PORT=0 picks one
    settings = dataclasses.replace(settings, server=server)
    app = create_app(settings)

    base = server.base_url
    for warning in settings.warnings:
        logger.warning("%s", warning)
    if settings.local_mode:
        logger.warning(
            "local mode: TWILIO_AUTH_TOKEN is not set, so the server listens on loopback only "
            "and signs with a generated secret in %s (bot simulate reads it)",
            server.data_dir / "local-secret",
        )
    logger.info(
        "listening on http://%s:%d; Twilio voice webhook: %s%s (stream %s%s)",
        server.host,
        server.port,
        base,
        VOICE_PATH,
        base.replace("http", "ws", 1),
        MEDIA_PATH,
    )
    realtime, local = settings.realtime, settings.local
    if realtime.local:
        logger.info(
            "Realtime: the local backend, in process (speech-to-text %s, chat %s, "
            "text-to-speech %s); other clients reach it at ws://127.0.0.1:%d/v1/realtime",
            local.stt_url or "Whisper tiny.en offline",
            local.llm_url or "the rules-based demo agent",
            local.tts_url or f"{local.tts_engine} offline",
            server.port,
        )
    else:
        logger.info(
            "Realtime: %s (%s dialect, %s audio, %s auth)",
            redact_url(realtime_url(realtime)),
            realtime.dialect.value,
            realtime.audio.value,
            realtime.auth,
        )

    asyncio.run(_serve(app, hypercorn_config(sock), server.shutdown_grace_s))


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
        registry = call_services(app).registry
        logger.info(
            "shutting down: no new connections; %d active call(s) get up to %.0f s to finish",
            len(registry.calls),
            grace_s,
        )
        # Calls still running at the deadline are ended politely: the caller hears the
        # fallback message instead of silence.
        loop.call_later(grace_s, registry.end_all_calls, "server shutting down")
        # A second signal means "now".
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, registry.end_all_calls, "server shutting down")

    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)
    logger.info("stopped after %d call(s)", call_services(app).registry.calls_started)

"""`bot serve`: the app under uvicorn, with the start-up banner and a graceful SIGTERM.

Uvicorn runs the `websockets` protocol implementation (`websockets-sansio`), which refuses a
frame over the size limit from its header, before reading its payload, and pauses reading
until the app has taken each message. HTTP is parsed by httptools.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Final

import uvicorn
from quart import Quart

from bot.app import call_services, create_app
from bot.call.realtime_socket import realtime_url, redact_url
from bot.call.web import MEDIA_PATH, VOICE_PATH
from bot.config import LOCAL_REALTIME_KEY_FILE, Settings

__all__ = ["AppServer", "bind_socket", "serve", "server_config"]

logger = logging.getLogger("bot.server")

MAX_WEBSOCKET_FRAME_BYTES: Final = 1024 * 1024  # a Twilio frame is ~300 bytes; bigger is abuse
_FINISH_S: Final = 5.0  # after the grace period: how long ended calls may take to close
_SETTLE_S: Final = 0.1


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def server_config(app: Quart) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=MAX_WEBSOCKET_FRAME_BYTES,
        ws_per_message_deflate=False,  # Twilio does not compress; inflating is a bomb risk
        lifespan="on",
        log_config=None,  # ours, from bot.log
        access_log=False,
        proxy_headers=False,  # the peer is who it is: no X-Forwarded-* is believed
        server_header=False,
        timeout_graceful_shutdown=2,
    )


class AppServer(uvicorn.Server):
    """Uvicorn without its own signal handling: `serve` decides when calls end."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop_accepting(self) -> None:
        for listener in getattr(self, "servers", []):
            listener.close()


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
            "text-to-speech %s); other clients on this machine reach it at "
            "ws://127.0.0.1:%d/v1/realtime with the key %s",
            local.stt_url or "Whisper tiny.en offline",
            local.llm_url or "the rules-based demo agent",
            local.tts_url or f"{local.tts_engine} offline",
            server.port,
            "LOCAL_REALTIME_KEY"
            if local.realtime_key
            else f"in {server.data_dir / LOCAL_REALTIME_KEY_FILE}",
        )
    else:
        logger.info(
            "Realtime: %s (%s dialect, %s audio, %s auth)",
            redact_url(realtime_url(realtime)),
            realtime.dialect.value,
            realtime.audio.value,
            realtime.auth,
        )
    asyncio.run(_serve(app, sock, server.shutdown_grace_s))


async def _freeze_when_started(server: uvicorn.Server) -> None:
    """Once start-up is over, its objects (modules, the app, migrations) are moved out of
    the garbage collector's sight: a full collection scanned them all and paused every
    call for about 40 ms, often under load."""
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.05)
    gc.collect()
    gc.freeze()


async def _serve(app: Quart, sock: socket.socket, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = AppServer(server_config(app))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    freezing = asyncio.create_task(_freeze_when_started(server))
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    freezing.cancel()
    if serving.done():  # it could not start
        stopping.cancel()
        await serving
        return
    server.stop_accepting()
    registry = call_services(app).registry
    logger.info(
        "shutting down: no new connections; %d active call(s) get up to %.0f s to finish",
        len(registry.calls),
        grace_s,
    )
    # A second signal means "now".
    now = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, now.set)
    idle = asyncio.create_task(registry.wait_idle())
    hurry = asyncio.create_task(now.wait())
    await asyncio.wait({idle, hurry}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
    hurry.cancel()
    # Calls still running are ended politely: the caller hears the fallback message. So is
    # a stream that was still connecting; a moment lets one in flight reach the app.
    registry.end_all_calls("server shutting down")
    await asyncio.sleep(_SETTLE_S)
    if idle.done():
        idle = asyncio.create_task(registry.wait_idle())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(idle, _FINISH_S)
    server.should_exit = True
    await serving
    logger.info("stopped after %d call(s)", registry.calls_started)

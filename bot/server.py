"""`bot serve`: the app under uvicorn, with the start-up banner and a graceful SIGTERM.

HTTP is parsed by httptools. The media socket is taken from uvicorn at the upgrade and
served on `picows` (`bot.call.twilio_socket.open_media_socket`), which parses and unmasks
frames in C. Other WebSockets (the local backend's `/v1/realtime`) run uvicorn's
`websockets` protocol (`websockets-sansio`). Both refuse a frame over the size limit from
its header, before reading its payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine, Iterator
from typing import Any, Final

import uvicorn
from quart import Quart
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bot.app import call_services, create_app, media_gate
from bot.call.realtime_socket import realtime_url, redact_url
from bot.call.twilio_socket import MediaGate, open_media_socket
from bot.call.web import MEDIA_PATH, VOICE_PATH
from bot.config import (
    LOCAL_REALTIME_KEY_FILE,
    Secret,
    Settings,
    load_local_secret,
    local_realtime_key,
)
from bot.errors import ConfigError
from bot.log import quiet_stranger_noise
from bot.store.store import Store

__all__ = ["AppServer", "bind_socket", "run_event_loop", "serve", "server_config"]

logger = logging.getLogger("bot.server")

MAX_WEBSOCKET_FRAME_BYTES: Final = 1024 * 1024  # a Twilio frame is ~300 bytes; bigger is abuse
MAX_REQUEST_HEAD_BYTES: Final = 128 * 1024  # request line and headers (with what follows them
# in the same read: a webhook body is at most 64 KiB)
REQUEST_HEAD_TIMEOUT_S: Final = 10.0  # to send a request's head, once the connection is idle
_FINISH_S: Final = 5.0  # after the grace period: how long ended calls may take to close
_SETTLE_S: Final = 0.1
_WORKER_MIN_LIFE_S: Final = 5.0  # a worker that dies sooner cannot start: do not spin
_PR_SET_PDEATHSIG: Final = 1
_MEDIA_PATHS: Final = frozenset({MEDIA_PATH.encode(), MEDIA_PATH.encode() + b"/"})


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request's head, in bytes and time.

    httptools buffers a header until it ends, without limit: one 200 MB header line cost the
    server 400 MB. A head that grows past `MAX_REQUEST_HEAD_BYTES` gets 431; one that takes
    longer than `REQUEST_HEAD_TIMEOUT_S` (a slow-loris holding sockets) is closed.
    """

    _in_head = True
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None
    media: MediaGate | None = None  # set per app by `server_config`

    def handle_websocket_upgrade(self) -> None:
        """The media socket goes to `picows`; any other WebSocket to uvicorn's protocol."""
        media = self.media
        if media is None or self.url.partition(b"?")[0] not in _MEDIA_PATHS:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        head = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.scope["headers"]:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        open_media_socket(self.transport, b"".join(head), media)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
                self._in_head = False
                self._stop_head_timer()
                self._refuse(b"431 Request Header Fields Too Large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if not self.parser.should_upgrade():  # an upgraded socket is no longer ours
            self._await_head()

    def _await_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(REQUEST_HEAD_TIMEOUT_S, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._in_head and transport.get_protocol() is self and not transport.is_closing():
            transport.close()

    def _refuse(self, status: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        self.transport.close()


def server_config(app: Quart) -> uvicorn.Config:
    quiet_stranger_noise()
    http = type("AppHttpProtocol", (BoundedHttpToolsProtocol,), {"media": media_gate(app)})
    return uvicorn.Config(
        app,
        http=http,
        ws="websockets-sansio",  # /v1/realtime; the media socket is picows (above)
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


def worker_count(settings: Settings) -> int:
    """WORKERS, or one per core when a PostgreSQL call log lets workers share calls."""
    if settings.server.workers:
        return settings.server.workers
    shared = settings.calllog.database.startswith("postgresql")
    return (os.cpu_count() or 1) if shared else 1


def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then refuse new calls and give active ones the grace period.
    With several workers, each is a process of its own on the same listening socket."""
    server = settings.server
    sock = bind_socket(server.host, server.port)
    server = dataclasses.replace(server, port=sock.getsockname()[1])  # PORT=0 picks one
    settings = dataclasses.replace(settings, server=server)
    run_event_loop(_check_call_log(settings.calllog.database))
    workers = worker_count(settings)
    if workers > 1:
        # What every worker must share is made once, before they fork: the local-mode
        # secret and the local backend's key.
        if settings.twilio.auth_token is None:
            load_local_secret(server.data_dir)
        key = Secret(local_realtime_key(settings.local, server.data_dir))
        settings = dataclasses.replace(
            settings, local=dataclasses.replace(settings.local, realtime_key=key)
        )
    app = None if workers > 1 else create_app(settings)

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
    if app is not None:
        run_event_loop(_serve(app, sock, server.shutdown_grace_s))
        return
    logger.info("%d workers", workers)
    if not _supervise(settings, sock, workers):
        raise SystemExit(1)


async def _check_call_log(url: str) -> None:
    """Open the call log once before serving (and migrate it, before any worker forks): a
    database that is missing or refuses us is one clear line, not a worker's traceback.

    Raises:
        ConfigError: the database cannot be opened.
    """
    try:
        store = await Store.open(url)
    except Exception as exc:  # the driver's own error: no URL, so no password in it
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] or type(exc).__name__
        raise ConfigError([f"DATABASE_URL: cannot open the call log: {reason}"]) from None
    await store.close()


def _supervise(settings: Settings, sock: socket.socket, workers: int) -> bool:
    """Fork the workers and keep them running: one that dies is started again. SIGTERM or
    SIGINT goes to every worker, and the supervisor waits for them all. False if a worker
    could not start (the supervisor then stops them all)."""
    stopping = False
    failed = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    supervisor = os.getpid()

    def fork() -> int:
        pid = os.fork()
        if pid == 0:  # the worker: its own app, event loop and database connections
            _die_with_parent()
            if os.getppid() != supervisor:  # it died before the line above took effect
                os._exit(1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                run_event_loop(_serve(create_app(settings), sock, settings.server.shutdown_grace_s))
            except BaseException:
                logger.exception("worker failed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        return pid

    children: set[int] = set()
    started: dict[int, float] = {}
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(workers):
        pid = fork()
        children.add(pid)
        started[pid] = time.monotonic()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        lived = time.monotonic() - started.pop(pid, 0.0)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if lived < _WORKER_MIN_LIFE_S:  # it cannot start: starting it again would spin
            logger.error("worker %d failed at start (status %d); stopping", pid, code)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        logger.error("worker %d ended (status %d); starting another", pid, code)
        pid = fork()
        children.add(pid)
        started[pid] = time.monotonic()
    return not failed


def _die_with_parent() -> None:
    """A worker whose supervisor is killed (`kill -9`) is killed too: the instance is gone as
    a whole, and other instances end its calls after its heartbeat stops (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where it exists: its transports read and write in C, and a call makes about
    300 socket reads and writes a second."""
    try:
        import uvloop
    except ImportError:  # Windows
        asyncio.run(main)
        return
    uvloop.run(main)


async def _freeze_when_started(server: uvicorn.Server) -> None:
    """Once start-up is over, its objects (modules, the app, migrations) are moved out of
    the garbage collector's sight. Without this, full collections came often (the young
    heap looked large next to the few objects counted as long-lived) and each scanned
    every module: calls paused for 70-140 ms under the hostile load, against 10 ms.

    The full collection runs before serving starts (`_serve`): run here, once requests are
    served, it froze them for 130 ms. Freezing alone takes no time."""
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.05)
    gc.freeze()


async def _serve(app: Quart, sock: socket.socket, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = AppServer(server_config(app))
    gc.collect()  # the imports' garbage, before any request waits on it
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    freezing = asyncio.create_task(_freeze_when_started(server))
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    freezing.cancel()
    if serving.done() or not server.started:  # it could not start, or was stopped first
        stopping.cancel()
        server.should_exit = True
        await serving
        return
    server.stop_accepting()
    services = call_services(app)
    registry = services.registry
    if services.handover is not None and registry.calls:
        logger.info("shutting down: moving %d call(s) to other instances", len(registry.calls))
        await registry.hand_over_all()
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

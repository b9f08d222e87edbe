"""Open the Realtime WebSocket: URL and headers per provider, timeouts, errors mapped at the seam.

Nothing above this module sees `websockets` exceptions from connecting: every failure is a
`RealtimeUnavailable` whose message is safe to log (no key, no key-bearing query string).
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from bot.config import Settings
from bot.errors import RealtimeUnavailable
from bot.sansio import realtime as rt

__all__ = ["open_realtime", "realtime_headers", "realtime_url", "redact_url", "session_config"]

MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
_SECRET_QUERY_KEYS: Final = frozenset({"api-key", "api_key", "key", "token", "access_token"})
_SECRET_HEADERS: Final = frozenset({"authorization", "api-key"})


class _RedactHeaders(logging.Filter):
    """websockets logs handshake headers at DEBUG as ("> %s: %s", name, value)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
            record.args = (args[0], "***")
        return True


_wire_logger = logging.getLogger("bot.realtime.wire")
_wire_logger.addFilter(_RedactHeaders())


def realtime_url(settings: Settings) -> str:
    """REALTIME_URL plus `model=`, unless the URL already names a model or Azure deployment."""
    parts = urlsplit(settings.realtime_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = {name for name, _ in query}
    if not names & {"model", "deployment"} and settings.realtime_model:
        query.append(("model", settings.realtime_model))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def realtime_headers(settings: Settings) -> dict[str, str]:
    headers: dict[str, str] = {}
    if settings.realtime_api_key is not None:
        key = settings.realtime_api_key.reveal()
        if settings.realtime_auth == "api-key":
            headers["api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    if settings.realtime_dialect is rt.Dialect.BETA:
        headers["OpenAI-Beta"] = "realtime=v1"
    return headers


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    query = [
        (name, "***" if name.lower() in _SECRET_QUERY_KEYS else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/*")))


def session_config(
    settings: Settings, tools: tuple[dict[str, object], ...] = ()
) -> rt.SessionConfig:
    return rt.SessionConfig(
        instructions=settings.bot_instructions,
        voice=settings.bot_voice,
        audio=settings.realtime_audio,
        transcription_model=settings.transcription_model,
        vad_threshold=settings.vad_threshold,
        vad_prefix_padding_ms=settings.vad_prefix_ms,
        vad_silence_duration_ms=settings.vad_silence_ms,
        tools=tools,
    )


async def open_realtime(
    settings: Settings, tools: tuple[dict[str, object], ...] = ()
) -> ClientConnection:
    """Connect and send `session.update`.

    Raises:
        RealtimeUnavailable: refused, unresolvable, timed out or rejected (e.g. a bad key).
    """
    url = realtime_url(settings)
    where = redact_url(url)
    try:
        connection = await websockets.connect(
            url,
            additional_headers=realtime_headers(settings),
            open_timeout=settings.realtime_connect_timeout_s,
            close_timeout=1,
            max_size=MAX_EVENT_BYTES,
            compression=None,  # audio in base64 barely compresses; save the CPU
            user_agent_header="twilio-realtime-bridge",
            logger=_wire_logger,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (check the API key)" if status in (401, 403) else ""
        raise RealtimeUnavailable(f"{where} rejected the connection: HTTP {status}{hint}") from exc
    except socket.gaierror as exc:
        raise RealtimeUnavailable(f"{where}: host name does not resolve") from exc
    except TimeoutError as exc:
        raise RealtimeUnavailable(f"{where}: no answer within the connect timeout") from exc
    except ConnectionRefusedError as exc:
        raise RealtimeUnavailable(f"{where}: connection refused") from exc
    except OSError as exc:
        raise RealtimeUnavailable(f"{where}: {exc.strerror or type(exc).__name__}") from exc
    except (InvalidURI, InvalidHandshake) as exc:
        raise RealtimeUnavailable(f"{where}: handshake failed ({type(exc).__name__})") from exc
    try:
        await connection.send(
            rt.session_update(session_config(settings, tools), settings.realtime_dialect)
        )
    except websockets.ConnectionClosed as exc:
        raise RealtimeUnavailable(f"{where} closed the connection at once") from exc
    return connection


def describe_close(connection: ClientConnection) -> str:
    """Why the server closed, from its close frame (codes such as 4000 carry the reason)."""
    frame = connection.protocol.close_rcvd
    if frame is None:
        return "connection lost"
    reason = frame.reason
    try:
        error = json.loads(reason).get("error", {})
        reason = error.get("message") or reason
    except (ValueError, AttributeError):
        pass
    return f"closed with code {frame.code}" + (f": {reason}" if reason else "")

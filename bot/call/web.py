"""Twilio's side of the app: the voice webhook (TwiML), the Media Stream, and the AMD and
status callbacks. Every webhook is signature-checked before anything else happens."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from quart import Blueprint, Response, abort, request
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from bot.call.channels import TwilioChannel
from bot.call.loop import CallServices, serve_stream
from bot.call.twilio_socket import (
    AsgiApp,
    AsgiTwilioChannel,
    MediaGate,
    Receive,
    Scope,
    Send,
)
from bot.config import ListenSettings, ServerSettings, TwilioSettings
from bot.core.ids import is_call_sid
from bot.core.tokens import TOKEN_PARAMETER
from bot.core.turn_taking import TURN_PARAMETERS
from bot.core.twiml import (
    dial_noun,
    render_connect_stream,
    render_start_stream,
    say_then_hang_up,
    xml_safe,
)
from bot.listen.stream import LISTEN_MODE, MODE_PARAMETER
from bot.log import ThrottledLog
from bot.store.schema import utcnow

__all__ = [
    "AMD_PATH",
    "MEDIA_PATH",
    "STATUS_PATH",
    "VOICE_PATH",
    "TwilioMediaGate",
    "call_blueprint",
    "media_endpoint",
    "stream_url",
    "twiml_dir",
]

logger = logging.getLogger("bot.call")

VOICE_PATH: Final = "/twilio/voice"
MEDIA_PATH: Final = "/twilio/media"
AMD_PATH: Final = "/twilio/amd"
STATUS_PATH: Final = "/twilio/status"
# Outbound calls carry these in their (signed) webhook URL; they become stream parameters.
OUTBOUND_PARAMETERS: Final = frozenset(
    {"instructions", "greeting", "amd", "campaign", *TURN_PARAMETERS}
)
HANG_UP: Final = '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'
MAX_WEBHOOK_BYTES: Final = 64 * 1024  # Twilio's webhooks are about 1 kB
MAX_WEBHOOK_FIELDS: Final = 128  # and about 30 fields
_WHOLE_SECONDS: Final = re.compile(r"[0-9]{1,9}")
_SIGNATURE: Final = re.compile(r"[A-Za-z0-9+/]{27}=")  # base64 of an HMAC-SHA1
FINAL_CALL_STATUSES: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
RESERVE_TIMEOUT_S: Final = 2.0  # Twilio waits 15 s for TwiML; a caller should not


def twiml_dir() -> Path:
    """`twiml/` at the repository root, or its copy inside an installed wheel."""
    packaged = Path(__file__).parent.parent / "_twiml"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "twiml"


def stream_url(base_url: str) -> str:
    base = urlsplit(base_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    return f"{scheme}://{base.netloc}{MEDIA_PATH}"


def call_blueprint(
    server: ServerSettings,
    twilio: TwilioSettings,
    listen: ListenSettings,
    fallback_message: str,
    signing_secret: str,
    services: Callable[[], CallServices],
) -> Blueprint:
    """The routes; `services` gives the call services once the app has started."""
    blueprint = Blueprint("call", __name__)
    validator = RequestValidator(signing_secret)
    rejections = ThrottledLog(logger)
    template = (twiml_dir() / "connect_stream.xml").read_text()
    fork_template = (twiml_dir() / "start_stream_dial.xml").read_text()
    base_url = server.base_url
    media_url = stream_url(base_url)
    local_mode = twilio.auth_token is None

    def webhook_urls(path: str) -> list[str]:
        urls = [base_url + path]
        if local_mode and server.public_url is None:
            urls.append(f"http://localhost:{server.port}{path}")
        query = request.query_string.decode("latin-1")
        return [url + "?" + query if query else url for url in urls]

    async def twilio_form(path: str, what: str) -> tuple[MultiDict[str, str], str]:
        """The form of a Twilio webhook, once its signature and CallSid are checked.

        What an unsigned request can cost is bounded before the body is read: the signature
        header must look like one, and the body must be small and have few fields.
        """
        signature = request.headers.get("X-Twilio-Signature", "")
        if not _SIGNATURE.fullmatch(signature):
            rejections.note(f"{what} rejected: missing or malformed X-Twilio-Signature")
            abort(403, "invalid signature")
        length = request.content_length
        if length is None or length > MAX_WEBHOOK_BYTES:
            rejections.note(f"{what} rejected: body of {length} bytes")
            abort(413, "a Twilio webhook is small")
        raw = await request.get_data(cache=False, as_text=False)
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            fields = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_WEBHOOK_FIELDS)
        except ValueError:
            rejections.note(f"{what} rejected: more than {MAX_WEBHOOK_FIELDS} fields")
            abort(400, "too many fields")
        form: MultiDict[str, str] = MultiDict(fields)
        if not any(validator.validate(url, form, signature) for url in webhook_urls(path)):
            rejections.note(f"{what} rejected: bad X-Twilio-Signature")
            abort(403, "invalid signature")
        call_sid = form.get("CallSid", "")
        if not is_call_sid(call_sid):
            abort(400, "CallSid missing or malformed")
        return form, call_sid

    @blueprint.post(VOICE_PATH)
    async def voice() -> Response:
        form, call_sid = await twilio_form(VOICE_PATH, "voice webhook")
        # Cleaned before the token binds them: Twilio sends back exactly what it was given.
        parameters = {
            "from": _one_line(form.get("From", ""), 64),
            "to": _one_line(form.get("To", ""), 64),
            "direction": _one_line(form.get("Direction", "inbound"), 32),
        }
        inbound = parameters["direction"] == "inbound"
        forward_to = listen.forward_target(parameters["to"]) if inbound else None
        if forward_to is not None:
            parameters[MODE_PARAMETER] = LISTEN_MODE  # bound by the token like the rest
        else:
            for name, value in request.args.items():
                if name in OUTBOUND_PARAMETERS or name.startswith("var_"):
                    parameters[xml_safe(name)] = xml_safe(value)
        calls = services()
        token = calls.admission.tokens.issue(call_sid, parameters)
        if token is None:
            # A replayed webhook (its signature is still good): this call had its stream.
            rejections.note(f"[{call_sid} -] voice webhook for a call that already had its stream")
            return Response(HANG_UP, content_type="text/xml")
        now = utcnow()
        calls.call_log.call(
            call_sid,
            started_at=now,
            direction=parameters["direction"],
            from_number=parameters["from"] or None,
            to_number=parameters["to"] or None,
        )
        busy = None
        if calls.registry.load >= calls.settings.max_calls:
            busy, count = "MAX_CALLS reached", f"{calls.registry.load} calls on this instance"
        elif not await _reserve(calls, call_sid):
            busy, count = "MAX_CALLS_TOTAL reached", f"{calls.settings.max_calls_total} in all"
        if busy is not None and forward_to is not None:
            # A person answers this line: put the call through, only without a transcript.
            logger.warning("[%s -] busy: %s (%s); put through untranscribed", call_sid, busy, count)
            calls.call_log.event(call_sid, 0, "error", f"not transcribed: {busy}")
            twiml = (
                f'<Response><Dial answerOnBridge="true">{dial_noun(forward_to)}</Dial></Response>'
            )
            return Response(twiml, content_type="text/xml")
        if busy is not None:
            logger.warning(
                "[%s -] busy: %s (%s); the caller is asked to call again", call_sid, busy, count
            )
            calls.call_log.call(call_sid, ended_at=now, ended_by="busy", end_reason=busy)
            calls.metrics.call_finished("busy", None)
            return Response(say_then_hang_up(calls.settings.busy_message), content_type="text/xml")
        parameters[TOKEN_PARAMETER] = token
        if forward_to is not None:
            logger.info(
                "[%s -] incoming call from %s: put through to %s, transcribed",
                call_sid,
                parameters["from"],
                forward_to,
            )
            twiml = render_start_stream(fork_template, media_url, parameters, forward_to)
            return Response(twiml, content_type="text/xml")
        calls.registry.prewarm(call_sid)
        logger.info("[%s -] incoming call from %s: TwiML sent", call_sid, parameters["from"])
        twiml = render_connect_stream(template, media_url, parameters, fallback_message)
        return Response(twiml, content_type="text/xml")

    @blueprint.post(AMD_PATH)
    async def amd() -> tuple[str, int]:
        """Twilio's asynchronous answering-machine detection verdict."""
        form, call_sid = await twilio_form(AMD_PATH, "AMD callback")
        answered_by = form.get("AnsweredBy", "unknown")[:32]
        logger.info("[%s -] answered by %s", call_sid, answered_by)
        calls = services()
        calls.call_log.call(call_sid, answered_by=answered_by)
        await calls.cluster.deliver_verdict(call_sid, answered_by)
        return "", 204

    @blueprint.post(STATUS_PATH)
    async def call_status() -> tuple[str, int]:
        """Twilio's call status callback: the call's final status and duration."""
        form, call_sid = await twilio_form(STATUS_PATH, "status callback")
        fields: dict[str, object] = {"twilio_status": form.get("CallStatus", "")[:32] or None}
        duration = form.get("CallDuration", "")
        if _WHOLE_SECONDS.fullmatch(duration):  # "²" is a digit to str.isdigit()
            fields["twilio_duration_s"] = int(duration)
        calls = services()
        calls.call_log.call(call_sid, **fields)
        if fields["twilio_status"] in FINAL_CALL_STATUSES:
            await calls.cluster.call_over(call_sid)
        return "", 204

    return blueprint


class TwilioMediaGate:
    """The media socket's door. Twilio signs the upgrade request when it can; a bad
    signature is refused before the socket is accepted. A stream is let in by its token,
    in `serve_stream`."""

    def __init__(
        self, server: ServerSettings, signing_secret: str, services: Callable[[], CallServices]
    ) -> None:
        self._validator = RequestValidator(signing_secret)
        media_url = stream_url(server.base_url)
        self._candidates = (media_url, media_url + "/")
        self._services = services
        self._rejections = ThrottledLog(logger)

    def accepts(self, signature: str | None) -> bool:
        if signature is None or (
            _SIGNATURE.fullmatch(signature)
            and any(self._validator.validate(url, {}, signature) for url in self._candidates)
        ):
            return True
        self._rejections.note("media stream rejected: bad X-Twilio-Signature on upgrade")
        return False

    async def serve(self, channel: TwilioChannel) -> None:
        await serve_stream(channel, self._services())


def media_endpoint(gate: MediaGate) -> AsgiApp:
    """The media socket on ASGI, for servers other than `bot serve` (see `twilio_socket`)."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if not gate.accepts(_header(scope, b"x-twilio-signature")):
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        await send({"type": "websocket.accept"})
        await gate.serve(AsgiTwilioChannel(receive, send))

    return endpoint


async def _reserve(calls: CallServices, call_sid: str) -> bool:
    """A slot under the global cap. If the database cannot say in time, the call goes ahead:
    the per-instance cap still holds."""
    try:
        return await asyncio.wait_for(calls.cluster.reserve(call_sid), RESERVE_TIMEOUT_S)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("[%s -] could not reserve a slot (%s)", call_sid, type(exc).__name__)
        return True


def _one_line(value: str, limit: int) -> str:
    """A number or a word from a form: no control characters, so it is safe in XML and in
    a log line."""
    return " ".join(xml_safe(value).split())[:limit]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None

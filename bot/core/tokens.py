"""Per-call stream tokens: an HMAC that binds a Media Stream to the CallSid that asked for it
and to the parameters the webhook chose for it.

The voice webhook (signature-checked) puts a token in the TwiML `<Parameter>`s; the media
socket accepts a stream only if `start` carries a valid, unexpired token for its own CallSid
and exactly the parameters the token was issued with. Nobody without our Twilio auth token
can therefore open a Realtime session on our key, and whoever holds a token cannot change
the bot's instructions, greeting, variables or numbers. That a token is spent once is kept
by `bot.call.admission.StreamTokens`; this module is the stateless part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Final

__all__ = ["TOKEN_PARAMETER", "bound_parameters", "issue_stream_token", "verify_stream_token"]

TOKEN_PARAMETER: Final = "token"
_DOMAIN: Final = b"media-stream-token:v2:"
# Expiry (Unix seconds) and a urlsafe base64 HMAC-SHA256: ASCII only, so that comparing and
# parsing cannot fail on what a stranger sends.
_TOKEN: Final = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


def bound_parameters(custom_parameters: Mapping[str, str]) -> dict[str, str]:
    """The parameters a token covers: all of the stream's, except the token."""
    return {k: v for k, v in custom_parameters.items() if k != TOKEN_PARAMETER}


def _mac(secret: str, call_sid: str, expires_at: int, parameters: Mapping[str, str]) -> str:
    bound = json.dumps(sorted(parameters.items()), ensure_ascii=True, separators=(",", ":"))
    message = _DOMAIN + f"{call_sid}:{expires_at}:".encode() + bound.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_stream_token(
    secret: str,
    call_sid: str,
    now: float,
    ttl_s: int,
    parameters: Mapping[str, str] | None = None,
) -> str:
    expires_at = int(now) + ttl_s
    return f"{expires_at}.{_mac(secret, call_sid, expires_at, parameters or {})}"


def verify_stream_token(
    secret: str,
    token: str | None,
    call_sid: str,
    now: float,
    parameters: Mapping[str, str] | None = None,
) -> str | None:
    """Returns None when the token is good, otherwise why it is not (safe to log)."""
    if not token:
        return "missing stream token"
    matched = _TOKEN.fullmatch(token)
    if matched is None:
        return "malformed stream token"
    expires_at = int(matched[1])
    expected = _mac(secret, call_sid, expires_at, parameters or {})
    if not hmac.compare_digest(matched[2], expected):
        return "stream token does not match this CallSid and its parameters"
    if now > expires_at:
        return "stream token expired"
    return None

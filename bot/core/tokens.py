"""Per-call stream tokens: an HMAC that binds a Media Stream to the CallSid that asked for it.

The voice webhook (signature-checked) puts a token in the TwiML `<Parameter>`s; the media
socket accepts a stream only if `start` carries a valid, unexpired token for its own CallSid.
Nobody without our Twilio auth token can therefore open a Realtime session on our key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["issue_stream_token", "verify_stream_token"]

_DOMAIN = b"media-stream-token:v1:"


def _mac(secret: str, call_sid: str, expires_at: int) -> str:
    message = _DOMAIN + f"{call_sid}:{expires_at}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_stream_token(secret: str, call_sid: str, now: float, ttl_s: int) -> str:
    expires_at = int(now) + ttl_s
    return f"{expires_at}.{_mac(secret, call_sid, expires_at)}"


def verify_stream_token(secret: str, token: str | None, call_sid: str, now: float) -> str | None:
    """Returns None when the token is good, otherwise why it is not (safe to log)."""
    if not token:
        return "missing stream token"
    expires_raw, _, mac = token.partition(".")
    if not expires_raw.isdigit() or not mac:
        return "malformed stream token"
    expires_at = int(expires_raw)
    if not hmac.compare_digest(mac, _mac(secret, call_sid, expires_at)):
        return "stream token does not match this CallSid"
    if now > expires_at:
        return "stream token expired"
    return None

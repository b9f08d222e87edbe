"""Twilio's REST API through the official `twilio` package: place, hang up and redirect calls.

`TWILIO_API_URL` rebases requests (tests point it at a fake API on loopback). Every failure
is a `TwilioApiError`; a call that is already over is not a failure for hang-up and redirect.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from bot.errors import TwilioApiError

__all__ = ["TWILIO_API", "TwilioRest"]

logger = logging.getLogger(__name__)

TWILIO_API: Final = "https://api.twilio.com"
_CALL_OVER: Final = frozenset({20404, 21220})  # not found; not in-progress (already ended)


class _RebasedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    def __init__(self, base: str) -> None:
        super().__init__(timeout=10)
        self._base = base.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API):
            url = self._base + url[len(TWILIO_API) :]
        auth = kwargs.pop("auth", None)
        if auth is not None:
            # aiohttp deprecates the BasicAuth object twilio-python builds from `auth`.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"Basic {token}"}
        return await super().request(method, url, *args, **kwargs)


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, api_url: str = TWILIO_API) -> None:
        self._http = _RebasedHttpClient(api_url)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    async def close(self) -> None:
        await self._http.close()

    async def create_call(self, **params: Any) -> str:
        """Place a call (twilio-python `calls.create` keyword arguments); returns its CallSid."""
        with _mapped_errors():
            call = await self._client.calls.create_async(**params)
        return str(call.sid)

    async def call_status(self, call_sid: str) -> str:
        """The call's status now: queued, ringing, in-progress, completed, busy, …"""
        with _mapped_errors():
            call = await self._client.calls(call_sid).fetch_async()
        return str(call.status)

    async def hang_up(self, call_sid: str) -> bool:
        """Complete a live call. False if it had already ended (not an error)."""
        return await self._update(call_sid, status="completed")

    async def redirect(self, call_sid: str, twiml: str) -> bool:
        """Replace the call's TwiML (this ends its media stream). False if it had ended."""
        return await self._update(call_sid, twiml=twiml)

    async def _update(self, call_sid: str, **params: Any) -> bool:
        try:
            with _mapped_errors():
                await self._client.calls(call_sid).update_async(**params)
        except TwilioApiError as exc:
            if exc.code in _CALL_OVER or exc.status == 404:
                return False
            raise
        return True


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Twilio's and the network's exceptions become `TwilioApiError`, here and only here."""
    try:
        yield
    except TwilioRestException as exc:
        message = f"Twilio API error {exc.code} (HTTP {exc.status}): {exc.msg}"
        raise TwilioApiError(message, exc.code, exc.status) from exc
    except OSError as exc:
        raise TwilioApiError(f"cannot reach Twilio: {type(exc).__name__}", None) from exc

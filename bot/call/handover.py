"""Moving a live call to another instance when this one stops (a deploy).

The stopping instance waits for a turn boundary (or cuts the answer at what was heard), then
asks Twilio's REST API to replace the call's TwiML with a new `<Connect><Stream>` through
the public URL, so the front proxy picks a live instance. The new stream carries a fresh
per-call token bound to a one-time handover nonce, which the shared `live_calls` row holds
until that stream claims the call. The new instance rebuilds the conversation from the
shared call log and seeds its Realtime session; this one lets the call go once Twilio ends
the old stream.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from bot.core.tokens import TOKEN_PARAMETER, issue_stream_token
from bot.core.twiml import render_connect_stream
from bot.errors import TwilioApiError
from bot.twilio_rest import TwilioRest

__all__ = ["HANDOVER_AT_MS", "HANDOVER_PARAMETER", "HANDOVER_SENT_MS", "Handover"]

HANDOVER_PARAMETER: Final = "handover"  # the nonce the new stream claims the call with
HANDOVER_AT_MS: Final = "handover_ms"  # the call's clock when it moved
HANDOVER_SENT_MS: Final = "handover_sent"  # wall clock (ms) of the REST update, for the gap
# Not carried to the new stream: the greeting was given, the verdict is known.
_LEFT_BEHIND: Final = frozenset(
    {TOKEN_PARAMETER, "greeting", "amd", HANDOVER_PARAMETER, HANDOVER_AT_MS, HANDOVER_SENT_MS}
)


@dataclass(frozen=True)
class Handover:
    rest: TwilioRest
    secret: str  # signs the new stream's token
    token_ttl_s: int
    media_url: str  # through the public URL, so the front proxy picks the instance
    template: str  # twiml/connect_stream.xml
    fallback: str
    wait_s: float  # for a turn boundary before the answer is cut

    @staticmethod
    def nonce() -> str:
        return secrets.token_hex(4)

    def twiml(self, call_sid: str, parameters: Mapping[str, str], nonce: str, at_ms: int) -> str:
        """The call's new TwiML: a stream with the call's parameters and the nonce."""
        moved = {k: v for k, v in parameters.items() if k not in _LEFT_BEHIND}
        moved[HANDOVER_PARAMETER] = nonce
        moved[HANDOVER_AT_MS] = str(at_ms)
        moved[HANDOVER_SENT_MS] = str(int(time.time() * 1000))
        now = time.time()
        token = issue_stream_token(self.secret, call_sid, now, self.token_ttl_s, moved)
        moved[TOKEN_PARAMETER] = token
        return render_connect_stream(self.template, self.media_url, moved, self.fallback)

    async def move(self, call_sid: str, twiml: str) -> str | None:
        """Ask Twilio to run the new TwiML; why it did not, or None."""
        try:
            live = await self.rest.redirect(call_sid, twiml)
        except TwilioApiError as exc:
            return str(exc)
        return None if live else "the call had already ended"

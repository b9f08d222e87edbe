"""Which calls have a stream token out and which have had their stream.

Twilio's webhook signatures carry no timestamp, so a captured voice webhook can be replayed
at will. The ledger makes that worthless: a CallSid has at most one live token (a replay
gets the same token back while no stream has used it, and nothing once one has), and a
token admits one stream. A second stream for a call, with any token, is refused and the
live call goes on. There is no legitimate replacement stream: Twilio opens one stream per
`<Connect><Stream>`, and when it ends the call moves on to the next TwiML verb.

The ledger lives in the process. Across instances, admission also asks the call log
whether the call already had a stream (see `Admission.claim`). The one legitimate second
stream is a call handed over by a stopping instance (`handover.py`): its token carries a
nonce that only the shared claim can spend.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from bot.call.handover import HANDOVER_PARAMETER
from bot.core.tokens import issue_stream_token, verify_stream_token

__all__ = ["StreamTokens"]

_Entry = TypeVar("_Entry")

REMEMBER_STREAMED_S: Final = 24 * 3600
CAPACITY: Final = 100_000  # calls remembered; about 200 bytes each
_MIN_LIFE_LEFT_S: Final = 5  # a token about to expire is not handed out again


@dataclass(frozen=True)
class _Issued:
    token: str
    parameters: dict[str, str]
    expires_at: float


class StreamTokens:
    def __init__(
        self,
        secret: str,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
        remember_s: float = REMEMBER_STREAMED_S,
        capacity: int = CAPACITY,
    ) -> None:
        self.secret = secret
        self.ttl_s = ttl_s
        self._clock = clock
        self._remember_s = remember_s
        self._capacity = capacity
        self._issued: OrderedDict[str, _Issued] = OrderedDict()
        self._streamed: OrderedDict[str, float] = OrderedDict()  # CallSid -> forget at

    def issue(self, call_sid: str, parameters: Mapping[str, str]) -> str | None:
        """The call's token for a stream with these parameters; None once it had a stream."""
        now = self._clock()
        self._forget(now)
        if call_sid in self._streamed:
            return None
        issued = self._issued.get(call_sid)
        if (
            issued is not None
            and issued.parameters == parameters
            and now < issued.expires_at - _MIN_LIFE_LEFT_S
        ):
            return issued.token
        token = issue_stream_token(self.secret, call_sid, now, self.ttl_s, parameters)
        self._issued.pop(call_sid, None)
        self._issued[call_sid] = _Issued(token, dict(parameters), now + self.ttl_s)
        self._bound(self._issued)
        return token

    def verify(self, call_sid: str, token: str | None, parameters: Mapping[str, str]) -> str | None:
        """Why a stream with this token may not start, or None (safe to log)."""
        problem = verify_stream_token(self.secret, token, call_sid, self._clock(), parameters)
        if problem is not None:
            return problem
        if HANDOVER_PARAMETER in parameters:
            # Minted by an instance handing the call over (perhaps this one, earlier): its
            # one use is guarded by the shared claim, which needs the nonce it carries.
            return None
        if call_sid in self._streamed:
            return "this call already had a stream"
        issued = self._issued.get(call_sid)
        if issued is not None and issued.token != token:
            return "a newer stream token was issued for this call"
        return None

    def spend(self, call_sid: str) -> None:
        """The call's stream started: no other stream, and no new token, for it."""
        now = self._clock()
        self._issued.pop(call_sid, None)
        self._streamed.pop(call_sid, None)
        self._streamed[call_sid] = now + self._remember_s
        self._bound(self._streamed)

    def was_streamed(self, call_sid: str) -> bool:
        return call_sid in self._streamed

    def _forget(self, now: float) -> None:
        # Both are in the order their entries were made, and every entry lives as long.
        while self._issued and next(iter(self._issued.values())).expires_at < now:
            self._issued.popitem(last=False)
        while self._streamed and next(iter(self._streamed.values())) < now:
            self._streamed.popitem(last=False)

    def _bound(self, entries: OrderedDict[str, _Entry]) -> None:
        while len(entries) > self._capacity:
            entries.popitem(last=False)

"""Review logins: what the session cookie holds, and which logins were ended.

The cookie holds a login id, when it began, and an HMAC of both keyed with the app's secret
and bound to the password. It carries nothing that can be cracked offline to find the
password, a changed password ends every login, and a logout ends its login on the server
(the cookie itself could be kept and replayed). Logins end after `lifetime_s` in any case.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

__all__ = ["LOGIN_LIFETIME_S", "ReviewLogins"]

LOGIN_LIFETIME_S: Final = 12 * 3600
_MAX_ENDED: Final = 100_000


class ReviewLogins:
    def __init__(self, secret: bytes, password: str, lifetime_s: float = LOGIN_LIFETIME_S) -> None:
        key = hmac.new(secret, b"review-login-key", hashlib.sha256).digest()
        # The password enters only through the keyed hash: changing it changes every MAC.
        self._key = hmac.new(key, b"password:" + password.encode(), hashlib.sha256).digest()
        self.lifetime_s = lifetime_s
        self._ended: dict[str, float] = {}  # login id -> when it would have expired

    def begin(self, login_id: str, now: float) -> dict[str, str | int]:
        """The marker of a new login, for the session cookie."""
        began = int(now)
        return {"id": login_id, "at": began, "mac": self._mac(login_id, began)}

    def is_valid(self, marker: object, now: float) -> bool:
        parsed = _parse(marker)
        if parsed is None:
            return False
        login_id, began, mac = parsed
        if not hmac.compare_digest(mac.encode(), self._mac(login_id, began).encode()):
            return False
        return 0 <= now - began <= self.lifetime_s and login_id not in self._ended

    def end(self, marker: object, now: float) -> None:
        """Logout: this login is over on the server, whatever the browser keeps."""
        if not self.is_valid(marker, now):
            return
        parsed = _parse(marker)
        assert parsed is not None
        self._ended = {k: t for k, t in self._ended.items() if t > now}
        if len(self._ended) >= _MAX_ENDED:
            self._ended.pop(next(iter(self._ended)))
        self._ended[parsed[0]] = parsed[1] + self.lifetime_s

    def _mac(self, login_id: str, began: int) -> str:
        message = f"{login_id}:{began}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def _parse(marker: object) -> tuple[str, int, str] | None:
    if not isinstance(marker, Mapping):
        return None
    login_id, began, mac = marker.get("id"), marker.get("at"), marker.get("mac")
    if not (isinstance(login_id, str) and isinstance(began, int) and isinstance(mac, str)):
        return None
    if not (0 < len(login_id) <= 64 and len(mac) == 64 and mac.isascii()):
        return None
    return login_id, began, mac

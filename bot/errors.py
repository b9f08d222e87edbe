"""Exceptions raised by the bridge.

    BotError
    ├── ConfigError            settings are missing or invalid (all problems in one message)
    ├── ProtocolError          a peer sent something we cannot use
    │   ├── TwilioProtocolError
    │   └── RealtimeProtocolError
    └── UpstreamError          a service we depend on failed
        ├── RealtimeUnavailable  the Realtime socket could not be opened
        └── TwilioApiError       a Twilio REST request failed

The pure core raises; the asyncio shell decides what a failure means for the call.
"""

from __future__ import annotations

__all__ = [
    "BotError",
    "ConfigError",
    "ProtocolError",
    "RealtimeProtocolError",
    "RealtimeUnavailable",
    "TwilioApiError",
    "TwilioProtocolError",
    "UpstreamError",
]


class BotError(Exception):
    """Base class of every error the bridge raises on purpose."""


class ConfigError(BotError):
    """Settings are invalid. `problems` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


class ProtocolError(BotError):
    """A peer sent a frame we cannot use."""


class TwilioProtocolError(ProtocolError):
    """A Twilio Media Streams frame is malformed."""


class RealtimeProtocolError(ProtocolError):
    """A Realtime server event is malformed."""


class UpstreamError(BotError):
    """A service the bridge depends on failed."""


class RealtimeUnavailable(UpstreamError):
    """The Realtime WebSocket could not be opened. The message says why, without secrets.
    `rejected`: the provider refused our credentials (401, 403), so trying again is futile."""

    def __init__(self, message: str, rejected: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected


class TwilioApiError(UpstreamError):
    """A Twilio REST request failed. `code` and `status` are Twilio's, when it answered."""

    def __init__(self, message: str, code: int | None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

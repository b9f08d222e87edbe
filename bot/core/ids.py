"""Identifiers that arrive from outside: phone numbers, Twilio SIDs, loopback host names."""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = ["is_account_sid", "is_call_sid", "is_e164", "is_loopback", "is_sid"]

_E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SID: Final = re.compile(r"^[A-Za-z0-9]{2,64}$")  # what a Media Streams frame may carry
_CALL_SID: Final = re.compile(r"^CA[0-9a-zA-Z]{32}$")
_ACCOUNT_SID: Final = re.compile(r"^AC[0-9a-zA-Z]{32}$")


def is_e164(number: str) -> bool:
    """E.164 is the only form Twilio takes without guessing."""
    return bool(_E164.fullmatch(number))


def is_sid(value: str) -> bool:
    """Alphanumeric and short: safe to log and to splice into messages unescaped."""
    return bool(_SID.fullmatch(value))


def is_call_sid(value: str) -> bool:
    return bool(_CALL_SID.fullmatch(value))


def is_account_sid(value: str) -> bool:
    return bool(_ACCOUNT_SID.fullmatch(value))


def is_loopback(host: str | None) -> bool:
    """`localhost` or a loopback address (IPv4 or IPv6, bracketed or not)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

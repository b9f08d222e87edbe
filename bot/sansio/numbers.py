"""Phone numbers: E.164 is the only form Twilio takes without guessing."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["is_e164"]

_E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")


def is_e164(number: str) -> bool:
    return bool(_E164.match(number))

"""A tool whose words the caller must hear in full (`BOT_TOOLS=tests.disclosure_tools`)."""

from __future__ import annotations

from bot.call.tools import Disclosure


async def recording_notice() -> Disclosure:
    """Tell the caller that the call is recorded."""
    return Disclosure("This call is recorded for quality and training.")

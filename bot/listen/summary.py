"""After a call: a summary and action items from an OpenAI-compatible chat model
(`SUMMARY_MODEL`), kept in the call log as a `summary` event and shown on the review page.

It runs once the call is over and never holds a call up; a model that fails or is slow
costs the summary only (an `error` event says why).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from bot.calllog.writer import CallLog
from bot.listen.core.summary import INSTRUCTIONS, read_summary, transcript
from bot.localrt.openai_compat import CompatibleChat
from bot.localrt.providers import TextDelta

__all__ = ["Summarizer"]

logger = logging.getLogger("bot.listen")
TIMEOUT_S: Final = 60.0
MAX_ANSWER_CHARS: Final = 20_000


class Summarizer:
    def __init__(self, chat: CompatibleChat, call_log: CallLog, timeout_s: float = TIMEOUT_S):
        self.chat = chat
        self.call_log = call_log
        self.timeout_s = timeout_s

    async def __call__(self, call_sid: str) -> None:
        try:
            await self.call_log.flush()
            call = await self.call_log.records.get_call(call_sid)
            said = ""
            if call is not None:  # the model's turns; or else the independent transcript
                beside = [e["data"] for e in call["events"] if e["kind"] == "transcript"]
                said = transcript(call["turns"]) or transcript(e for e in beside if e)
            if not said:
                return
            answer = ""
            async with asyncio.timeout(self.timeout_s):
                async for event in self.chat.stream(
                    INSTRUCTIONS, [{"role": "user", "content": said}], []
                ):
                    if isinstance(event, TextDelta):
                        answer += event.text
                        if len(answer) > MAX_ANSWER_CHARS:  # a summary is short: stop reading
                            break
        except Exception as exc:  # the summary is lost, nothing else
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)[:200]
            logger.warning("[%s] no summary: %s", call_sid, reason)
            self.call_log.event(call_sid, None, "error", f"no summary: {reason}")
            return
        summary = read_summary(answer)
        self.call_log.event(
            call_sid,
            None,
            "summary",
            summary.summary,
            {"summary": summary.summary, "action_items": list(summary.action_items)},
        )

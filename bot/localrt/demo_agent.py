"""A rules-based demo agent, not a language model: enough to show the whole pipeline offline.

It greets, answers order-status questions through the `get_order_status` tool when the
session offers it, says goodbye and calls `end_call`, and otherwise says what it can do.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

from bot.call.core.actions import END_CALL
from bot.call.core.prompt import requested_greeting
from bot.localrt.providers import ChatDone, ChatEvent, TextDelta, ToolCall

__all__ = ["DemoAgent"]

_ORDER = re.compile(r"\b(\d{3,8})\b")
_BYE = re.compile(r"\b(bye|goodbye|that's all|that is all)\b", re.I)


class DemoAgent:
    """Answers from rules; streams its reply word by word like a model would."""

    # Primes speech-to-text for this demo: a shop's callers say order numbers.
    TRANSCRIPTION_PROMPT = (
        "A customer calls a shop about an order. Order numbers are digits, like 2093."
    )

    async def stream(
        self, instructions: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ChatEvent]:
        for part in self.reply(instructions, messages, {tool.get("name") for tool in tools}):
            if isinstance(part, ToolCall):
                yield part
            else:
                for word in part.split(" "):
                    yield TextDelta(word + " ")
        yield ChatDone({"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})

    def reply(
        self, instructions: str, messages: list[dict[str, Any]], tools: set[Any]
    ) -> list[str | ToolCall]:
        last = messages[-1] if messages else None
        if last is None:
            return [requested_greeting(instructions) or "Hello! How can I help you today?"]
        if last["role"] == "tool":
            return [_about_order(str(last.get("content") or "{}"))]
        # Speech-to-text writes 4,417 for "four thousand four hundred seventeen".
        text = re.sub(r"(?<=\d),(?=\d{3}\b)|[$€£]", "", str(last.get("content") or ""))
        if _BYE.search(text) and END_CALL in tools:
            return [
                "Thanks for calling. Goodbye!",
                _call(END_CALL, {"reason": "the caller said goodbye"}),
            ]
        order = _ORDER.search(text)
        if order and "order" in text.lower() and "get_order_status" in tools:
            return [_call("get_order_status", {"order_id": order.group(1)})]
        if "order" in text.lower():
            return ["Sure. What is your order number?"]
        return ["I am a demo agent. I can tell you the status of an order. What is its number?"]


def _call(name: str, arguments: dict[str, str]) -> ToolCall:
    return ToolCall("call_" + secrets.token_hex(6), name, json.dumps(arguments))


def _about_order(result: str) -> str:
    try:
        order = json.loads(result)
    except ValueError:
        return "Sorry, I could not look that up."
    if not isinstance(order, dict) or not order.get("found"):
        return "I could not find that order. Could you repeat the number?"
    eta = order.get("eta")
    return f"Order {order.get('order_id')} is {order.get('status')}." + (
        f" It should arrive {eta}." if eta else ""
    )

from __future__ import annotations

import json

import pytest

from bot.localrt.demo_agent import DemoAgent
from bot.localrt.providers import ToolCall

TOOLS = {"get_order_status", "end_call"}


@pytest.mark.parametrize(
    ("heard", "order_id"),
    [
        ("Where is my order 4,417?", "4417"),
        ("order for $1417", "1417"),
        ("My order is 6001.", "6001"),
    ],
)
def test_order_numbers_are_read_from_speech_to_text(heard: str, order_id: str) -> None:
    [call] = DemoAgent().reply("", [{"role": "user", "content": heard}], TOOLS)
    assert isinstance(call, ToolCall) and json.loads(call.arguments) == {"order_id": order_id}


def test_answers_goodbyes_and_greetings() -> None:
    agent = DemoAgent()
    result = '{"found": true, "order_id": "4417", "status": "shipped", "eta": "Friday"}'
    assert agent.reply("", [{"role": "tool", "content": result}], TOOLS) == [
        "Order 4417 is shipped. It should arrive Friday."
    ]
    bye = agent.reply("", [{"role": "user", "content": "That's all, goodbye"}], TOOLS)
    assert bye[0] == "Thanks for calling. Goodbye!" and isinstance(bye[1], ToolCall)
    assert bye[1].name == "end_call"
    greeting = "Greet the caller now by saying exactly this, then wait for them: Hi there!"
    assert agent.reply(greeting, [], TOOLS) == ["Hi there!"]
    assert "order" in str(agent.reply("", [{"role": "user", "content": "hello"}], set()))

"""The conversation a new Realtime session is seeded with: order, heard text, the token
budget, and the call log's version of it for a call that moved instances."""

from __future__ import annotations

from bot.call.core.history import History, history_from_log


def shown(history: History, budget: int = 10_000) -> list[tuple[str | None, str]]:
    return [
        (item.role or item.type, item.text or item.call_id or "") for item in history.seed(budget)
    ]


def test_entries_keep_the_order_they_entered_and_their_newest_text() -> None:
    history = History()
    history.place("u1", "caller")
    history.place("a1", "assistant")
    history.said("a1", "assistant", "Your order shipped on Monday")
    history.said("u1", "caller", "Where is my order?")  # the transcript came late
    history.said("a1", "assistant", "Your order")  # then the answer was cut: heard part
    history.tool_called("c1", "lookup", "{}")
    history.note("[The caller pressed 5 on the phone keypad]")
    history.place("a2", "assistant")  # never heard a word: left out
    assert shown(history) == [
        ("user", "Where is my order?"),
        ("assistant", "Your order"),
        ("function_call", "c1"),
        ("user", "[The caller pressed 5 on the phone keypad]"),
    ]
    history.tool_answered("c1", '{"ok": true}')
    assert [item.type for item in history.seed(10_000)].count("function_call_output") == 1


def test_the_budget_keeps_the_newest_turns_and_says_what_it_left_out() -> None:
    history = History()
    for number in range(10):
        history.said(f"u{number}", "caller", f"question {number} " + "words " * 20)
        history.said(f"a{number}", "assistant", f"answer {number} " + "words " * 20)
    items = history.seed(100)  # two turns of ~37 tokens
    assert items[0].role == "system" and "18 earlier turns are left out" in items[0].text
    assert [item.text.split()[:2] for item in items[1:]] == [["question", "9"], ["answer", "9"]]
    assert history.seed(10_000)[0].text.startswith("question 0")  # all fit: no note


def test_the_call_log_version_orders_turns_tools_and_digits_by_call_time() -> None:
    turns = [
        {"speaker": "assistant", "text": "Hello!", "started_ms": 100, "interrupted": False},
        {"speaker": "caller", "text": "Order 4417?", "started_ms": 1500, "interrupted": False},
        {
            "speaker": "assistant",
            "text": "It shipped on Monday with UPS.",
            "heard_text": "It shipped",
            "started_ms": 4000,
            "interrupted": True,
        },
        {"speaker": "caller", "text": None, "started_ms": 6000, "interrupted": False},
    ]
    events = [
        {
            "kind": "tool",
            "at_ms": 3000,
            "data": {"name": "get_order_status", "arguments": "{}", "result": "{}"},
        },
        {
            "kind": "tool",
            "at_ms": 7000,
            "data": {"name": "end_call", "arguments": "", "result": ""},
        },
        {"kind": "dtmf", "at_ms": 5000, "detail": "9"},
        {"kind": "interruption", "at_ms": 4500, "detail": "x"},
    ]
    assert shown(history_from_log(turns, events)) == [
        ("assistant", "Hello!"),
        ("user", "Order 4417?"),
        ("function_call", "call_log_2"),
        ("function_call_output", "call_log_2"),
        ("assistant", "It shipped"),
        ("user", "[The caller pressed 9 on the phone keypad]"),
    ]

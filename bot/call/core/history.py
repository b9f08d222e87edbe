"""The conversation as the caller experienced it, for seeding a new Realtime session.

A session that drops, expires or is renewed takes its conversation with it. The new one is
told the call so far in order, as text: caller turns as user messages, assistant turns as
the words the caller *heard* (an answer cut short keeps only its heard part), and function
calls with their outputs. Assistant items accept text only, so the session's output
modalities stay explicit elsewhere (`CreateResponse.speak`).

The most recent entries that fit a token budget are seeded; a short system note says how
many earlier ones were left out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from bot.core.realtime.events import Item

__all__ = ["History", "estimate_tokens", "history_from_log"]

MAX_ENTRIES: Final = 400  # memory bound per call; older ones count as left out
_HANG_UP_TOOLS: Final = frozenset({"end_call", "transfer_call"})  # the call goes on: moot
_ITEM_OVERHEAD_TOKENS: Final = 4


def estimate_tokens(text: str) -> int:
    """About four characters a token in English: good enough for a budget."""
    return _ITEM_OVERHEAD_TOKENS + (len(text) + 3) // 4


@dataclass(slots=True)
class _Entry:
    kind: Literal["caller", "assistant", "tool"]
    text: str = ""  # caller: what they said; assistant: what the caller heard
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str | None = None

    def items(self) -> list[Item]:
        if self.kind == "tool":
            call = Item(
                None,
                "function_call",
                call_id=self.call_id,
                name=self.name,
                arguments=self.arguments,
            )
            if self.output is None:
                return [call]  # still running: its output follows in the new session
            answer = Item(None, "function_call_output", call_id=self.call_id, output=self.output)
            return [call, answer]
        if not self.text.strip():
            return []
        role: Literal["user", "assistant"] = "user" if self.kind == "caller" else "assistant"
        return [Item(None, "message", role=role, text=self.text)]

    def tokens(self) -> int:
        if self.kind == "tool":
            return estimate_tokens(self.name + self.arguments + (self.output or ""))
        return estimate_tokens(self.text) if self.text.strip() else 0


class History:
    """Entries keyed by item id (or call id), in the order they entered the conversation."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._evicted = 0
        self._notes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def place(self, key: str, kind: Literal["caller", "assistant"]) -> None:
        """An item takes its place in the conversation (its text may come later)."""
        if key not in self._entries:
            self._add(key, _Entry(kind))

    def said(self, key: str, kind: Literal["caller", "assistant"], text: str) -> None:
        """The newest text of an item: a transcript, or the heard part of an answer."""
        entry = self._entries.get(key)
        if entry is None:
            self._add(key, _Entry(kind, text))
        else:
            entry.text = text

    def note(self, text: str) -> None:
        """A caller message that is not speech, such as a keypad digit."""
        self._notes += 1
        self._add(f"note {self._notes}", _Entry("caller", text))

    def tool_called(self, call_id: str, name: str, arguments: str) -> None:
        self._add(
            f"call {call_id}", _Entry("tool", call_id=call_id, name=name, arguments=arguments)
        )

    def tool_answered(self, call_id: str, output: str) -> None:
        entry = self._entries.get(f"call {call_id}")
        if entry is not None:
            entry.output = output

    def seed(self, budget_tokens: int) -> list[Item]:
        """The conversation for a new session: the newest entries within `budget_tokens`,
        oldest first, after a note of what was left out."""
        kept: list[_Entry] = []
        spent = 0
        entries = list(self._entries.values())
        left_out = self._evicted
        for index in range(len(entries) - 1, -1, -1):
            entry = entries[index]
            cost = entry.tokens()
            if spent + cost > budget_tokens:
                left_out += sum(1 for older in entries[: index + 1] if older.items())
                break
            spent += cost
            kept.append(entry)
        items = [item for entry in reversed(kept) for item in entry.items()]
        if left_out:
            note = (
                f"This phone call began earlier; {left_out} earlier turn"
                f"{'s are' if left_out != 1 else ' is'} left out here. Carry on the "
                "conversation from where it is."
            )
            items.insert(0, Item(None, "message", role="system", text=note))
        return items

    def _add(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
            self._evicted += 1


def history_from_log(
    turns: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> History:
    """The conversation as the call log kept it, for a call that moves to this instance:
    turns (an interrupted answer as what was heard), custom tools with their results, and
    keypad digits, in call-time order."""
    timeline: list[tuple[int, int, str, Mapping[str, Any]]] = []
    for order, turn in enumerate(turns):
        at = turn.get("started_ms")
        timeline.append((at if isinstance(at, int) else 0, order, "turn", turn))
    for order, event in enumerate(events):
        at = event.get("at_ms")
        if event.get("kind") in ("tool", "dtmf"):
            timeline.append((at if isinstance(at, int) else 0, len(turns) + order, "event", event))
    timeline.sort(key=lambda entry: (entry[0], entry[1]))
    history = History()
    for number, (_, _, kind, record) in enumerate(timeline):
        if kind == "turn":
            speaker = record.get("speaker")
            text = record.get("heard_text") if record.get("interrupted") else record.get("text")
            if speaker in ("caller", "assistant") and isinstance(text, str):
                history.said(f"log {number}", speaker, text)
        elif record.get("kind") == "dtmf":
            history.note(f"[The caller pressed {record.get('detail')} on the phone keypad]")
        else:
            data = record.get("data")
            if isinstance(data, Mapping) and data.get("name") not in _HANG_UP_TOOLS:
                call_id = f"call_log_{number}"
                history.tool_called(call_id, str(data.get("name")), str(data.get("arguments")))
                history.tool_answered(call_id, str(data.get("result")))
    return history

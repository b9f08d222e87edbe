"""The local backend's conversation: its items in order, what the caller heard of each
answer, and the history a chat model is given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bot.core.heard import heard_text
from bot.core.realtime import events as rt

__all__ = ["Conversation", "Entry"]


@dataclass
class Entry:
    """One item; an assistant message's text grows as its sentences are spoken."""

    id: str
    type: Literal["message", "function_call", "function_call_output"]
    role: Literal["user", "assistant", "system"] | None = None
    text: str = ""  # for audio messages: the transcript
    audio: bool = False
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    output: str = ""
    spoken: list[tuple[str, int]] = field(default_factory=list)  # (sentence, audio ms)

    def view(
        self, status: Literal["completed", "in_progress", "incomplete"] = "completed"
    ) -> rt.Item:
        return rt.Item(
            self.id,
            self.type,
            role=self.role,
            text=self.text,
            audio=self.audio,
            status=status,
            call_id=self.call_id,
            name=self.name,
            arguments=self.arguments,
            output=self.output,
        )


class Conversation:
    def __init__(self) -> None:
        self.items: list[Entry] = []

    def add(self, entry: Entry) -> str | None:
        """Append an item; returns the id of the item before it."""
        previous = self.items[-1].id if self.items else None
        self.items.append(entry)
        return previous

    def find(self, item_id: str) -> Entry | None:
        return next((entry for entry in self.items if entry.id == item_id), None)

    def delete(self, item_id: str) -> None:
        self.items = [entry for entry in self.items if entry.id != item_id]

    def truncate(self, item_id: str, audio_end_ms: int) -> str | None:
        """Keep only what was heard of an assistant answer; None, or why it cannot be."""
        entry = self.find(item_id)
        if entry is None or entry.role != "assistant" or not entry.audio:
            return f"No assistant audio item {item_id!r}."
        total = sum(ms for _, ms in entry.spoken)
        if audio_end_ms > total:
            return f"Audio content of {total}ms is already shorter than {audio_end_ms}ms"
        entry.text = heard_text(entry.spoken, audio_end_ms)
        return None

    def messages(self) -> list[dict[str, Any]]:
        """The history for a chat model, chat-completions style: what the caller heard of
        each answer, and tool calls with their results."""
        messages: list[dict[str, Any]] = []
        for entry in self.items:
            if entry.type == "message" and entry.text:
                messages.append({"role": entry.role or "user", "content": entry.text})
            elif entry.type == "function_call":
                call = {
                    "id": entry.call_id,
                    "type": "function",
                    "function": {"name": entry.name, "arguments": entry.arguments},
                }
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            elif entry.type == "function_call_output":
                messages.append(
                    {"role": "tool", "tool_call_id": entry.call_id, "content": entry.output}
                )
        return messages

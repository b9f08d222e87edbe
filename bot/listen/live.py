"""The live view of calls in progress: their turns as server-sent events."""

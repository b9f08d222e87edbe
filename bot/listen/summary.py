"""After a call: a summary and action items from an OpenAI-compatible chat model."""

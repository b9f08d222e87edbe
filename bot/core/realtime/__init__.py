"""The OpenAI Realtime protocol, for clients and servers alike, in both dialects."""

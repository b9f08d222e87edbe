"""A small OpenAI-compatible HTTP API on loopback: streaming chat (with a tool call split
over several chunks), transcription and speech. It records every request."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class FakeOpenAI:
    def __init__(self, *, chat_status: int = 200, chat_reply: str | None = None) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.chat_status = chat_status
        self.chat_reply = chat_reply  # the chat's whole answer, in three chunks
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            ("chat", {**body, "authorization": request.headers.get("Authorization")})
        )
        if self.chat_status != 200:
            return web.json_response(
                {"error": {"message": "model overloaded"}}, status=self.chat_status
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        last = body["messages"][-1]
        if last["role"] == "user" and body.get("tools"):
            chunks: list[dict[str, Any]] = [
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_7",
                            "type": "function",
                            "function": {"name": "get_order_status", "arguments": ""},
                        }
                    ]
                },
                {"tool_calls": [{"index": 0, "function": {"arguments": '{"order_'}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": 'id": "4417"}'}}]},
            ]
        elif self.chat_reply is not None:
            third = len(self.chat_reply) // 3 + 1
            chunks = [
                {"content": self.chat_reply[i : i + third]}
                for i in range(0, len(self.chat_reply), third)
            ]
        else:
            chunks = [
                {"content": "Your order "},
                {"content": "shipped. It "},
                {"content": "arrives Friday."},
            ]
        for delta in chunks:
            chunk = {"choices": [{"index": 0, "delta": delta}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        }
        await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        return response

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        audio = upload.file.read()  # type: ignore[union-attr]
        self.requests.append(
            (
                "transcribe",
                {
                    "model": form["model"],
                    "bytes": len(audio),
                    "riff": audio[:4],
                    "prompt": form.get("prompt"),
                },
            )
        )
        return web.json_response({"text": " Where is my order 4417? "})

    async def _speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("speech", body))
        return web.Response(body=b"\x10\x00" * 2400 * len(body["input"].split()))  # 100 ms a word

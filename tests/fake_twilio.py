"""Twilio's REST API (the Calls endpoints the bridge uses), served on loopback by aiohttp.

Records every request exactly as sent (method, path, form fields with repeats, Basic
auth, arrival time). Calls can be given scripted outcomes, which `GET Calls/{sid}.json`
reports after a delay, the way a real call goes from queued to completed or busy.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    method: str
    path: str
    form: dict[str, list[str]]
    user: str
    password: str
    at: float = field(default_factory=time.monotonic)

    def one(self, name: str) -> str:
        [value] = self.form[name]
        return value


@dataclass
class FakeCall:
    sid: str
    to: str
    created: float
    outcome: str = "completed"
    ended: bool = False


class FakeTwilio:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        outcome: Callable[[str], str] = lambda to: "completed",
        settle_s: float = 0.05,
        fail_creates: int = 0,
        callers_hang_up_first: bool = False,
        on_create: Callable[[str], None] | None = None,
        on_twiml: Callable[[str, str], None] | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.outcome = outcome  # final status of a call to this number
        self.settle_s = settle_s  # how long a call stays "in-progress"
        self.fail_creates = fail_creates
        self.callers_hang_up_first = callers_hang_up_first  # updates find the call over
        self.on_create = on_create
        self.on_twiml = on_twiml  # (CallSid, TwiML) of a call update: Twilio runs it
        self.max_in_flight = 0  # most calls created and not yet reported over, at once
        self.requests: list[Recorded] = []
        self.calls: dict[str, FakeCall] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeTwilio:
        app = web.Application()
        base = "/2010-04-01/Accounts/{account}/Calls"
        app.router.add_post(base + ".json", self._create)
        app.router.add_post(base + "/{sid}.json", self._update)
        app.router.add_get(base + "/{sid}.json", self._fetch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def of(self, method: str, suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    async def _record(self, request: web.Request) -> Recorded | web.Response:
        form = await request.post()
        header = request.headers.get("Authorization", "")
        user, _, password = (
            base64.b64decode(header[6:]).decode().partition(":")
            if header.startswith("Basic ")
            else ("", "", "")
        )
        recorded = Recorded(
            request.method,
            request.path,
            {key: [str(v) for v in form.getall(key)] for key in form},
            user,
            password,
        )
        self.requests.append(recorded)
        if (user, password) != (self.account_sid, self.auth_token) or request.match_info[
            "account"
        ] != self.account_sid:
            return _error(401, 20003, "Authenticate")
        return recorded

    async def _create(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if isinstance(recorded, web.Response):
            return recorded
        if self.fail_creates > 0:
            self.fail_creates -= 1
            return _error(500, 20500, "Internal Server Error")
        sid = "CA" + secrets.token_hex(16)
        to = recorded.one("To")
        if self.on_create is not None:
            self.on_create(to)
        self.calls[sid] = FakeCall(sid, to, time.monotonic(), self.outcome(to))
        in_flight = sum(1 for call in self.calls.values() if not call.ended)
        self.max_in_flight = max(self.max_in_flight, in_flight)
        return web.json_response(self._call_json(self.calls[sid], "queued"), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if isinstance(recorded, web.Response):
            return recorded
        sid = request.match_info["sid"]
        if sid not in self.calls and not self.callers_hang_up_first:
            self.calls[sid] = FakeCall(sid, "?", time.monotonic())  # a call Twilio routed to us
        call = self.calls.get(sid)
        if call is None or call.ended:
            return _error(404, 20404, "The requested resource was not found")
        if recorded.form.get("Status") == ["completed"] or "Twiml" in recorded.form:
            call.ended = "Status" in recorded.form
        if "Twiml" in recorded.form and self.on_twiml is not None:
            self.on_twiml(sid, recorded.one("Twiml"))
        return web.json_response(self._call_json(call, "in-progress"))

    async def _fetch(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if isinstance(recorded, web.Response):
            return recorded
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return _error(404, 20404, "The requested resource was not found")
        status = call.outcome if time.monotonic() - call.created >= self.settle_s else "in-progress"
        call.ended = call.ended or status != "in-progress"
        return web.json_response(self._call_json(call, status))

    def _call_json(self, call: FakeCall, status: str) -> dict[str, Any]:
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "from": "+15550000000",
            "status": status,
            "direction": "outbound-api",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json",
        }


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )

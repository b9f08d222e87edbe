"""Review of the call log: login, pages (`/calls`), the JSON API (`/api/calls`), recordings.

Everything here needs the review password (`REVIEW_PASSWORD`); without it set, review is
off and every URL answers 403. Pages use a signed session cookie after `/login`; the JSON
API also takes HTTP Basic auth with the password, for scripts and dashboards. Guesses are
limited per address and overall (`core/throttle.py`); logins end on logout, on a password
change and after 12 hours (`core/logins.py`). No page may be cached or framed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hmac
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from quart import (
    Blueprint,
    Response,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    session,
)
from quart.typing import ResponseReturnValue

from bot.calllog.core.logins import ReviewLogins
from bot.calllog.core.throttle import LoginThrottle
from bot.calllog.core.view import jsonable, timeline
from bot.cluster.core.messages import MAX_SAY_CHARS, ControlAction, Delivery
from bot.config import CallLogSettings
from bot.listen.live import live_events
from bot.store.calls import CallFilter, CallRecords

__all__ = ["PAGE_SIZE", "review_blueprint"]

PAGE_SIZE: Final = 25
_CALL_SID: Final = re.compile(r"CA[0-9a-fA-F]{32}")
MAX_PAGE: Final = 100_000
_DISABLED: Final = "call review is disabled: set REVIEW_PASSWORD to enable it"
_WRONG_PASSWORD_DELAY_S: Final = 0.5
_PRIVATE: Final = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


Control = Callable[[str, ControlAction, str], Awaitable[Delivery]]
_ACTIONS: Final[dict[str, ControlAction]] = {
    "hangup": "hang_up",
    "transfer": "transfer",
    "say": "say",
}


def review_blueprint(
    settings: CallLogSettings,
    records: Callable[[], CallRecords],
    secret: bytes,
    control: Callable[[], Control] | None = None,
) -> Blueprint:
    """The review routes; `records` gives the call records once the app has started,
    `secret` keys the login markers, and `control` reaches a live call wherever it runs
    (hang up, transfer, say this)."""
    review = Blueprint("review", __name__, template_folder="templates")
    password = None if settings.review_password is None else settings.review_password.reveal()
    logins = ReviewLogins(secret, password or "")
    throttle = LoginThrottle()
    recordings_root = settings.recordings_path

    async def guess(attempt: str) -> ResponseReturnValue | bool:
        """Compare a password guess, if the throttle allows one: the refusal, or whether
        it was right."""
        assert password is not None
        address, now = request.remote_addr or "?", time.monotonic()
        wait = throttle.take(address, now)
        if wait > 0:
            headers = {"Retry-After": str(math.ceil(wait))}
            return {"error": "too many tries; wait and try again"}, 429, headers
        if hmac.compare_digest(attempt.encode(), password.encode()):
            throttle.give_back(address, now)
            return True
        await asyncio.sleep(_WRONG_PASSWORD_DELAY_S)
        return False

    async def denied() -> ResponseReturnValue | None:
        """None when the request may see call data; otherwise the refusal."""
        api = request.path.startswith("/api/")
        if password is None:
            return ({"error": _DISABLED}, 403) if api else (_DISABLED, 403)
        if logins.is_valid(session.get("review"), time.time()):
            return None
        if api:
            attempt = _basic_auth_password()
            if attempt is not None:
                outcome = await guess(attempt)
                if outcome is True:
                    return None
                if outcome is not False:
                    return outcome
            return {"error": "login required"}, 401, {"WWW-Authenticate": 'Basic realm="calls"'}
        query = request.query_string.decode("latin-1")
        here = request.path + ("?" + query if query else "")
        return await render_template("login.html", error=None, next=here), 401

    @review.before_request
    async def guard() -> ResponseReturnValue | None:
        if request.endpoint in ("review.login", "review.logout"):
            return None
        return await denied()

    @review.after_request
    async def private(response: Response) -> Response:
        response.headers.update(_PRIVATE)
        return response

    @review.route("/login", methods=["GET", "POST"])
    async def login() -> ResponseReturnValue:
        if password is None:
            return _DISABLED, 403
        if request.method == "GET":
            next_url = _local_path(request.args.get("next", ""))
            return await render_template("login.html", error=None, next=next_url)
        form = await request.form
        target = _local_path(form.get("next", ""))
        outcome = await guess(form.get("password", ""))
        if outcome is True:
            session.clear()
            session["review"] = logins.begin(secrets.token_urlsafe(16), time.time())
            return redirect(target)
        if outcome is False:
            error = "Wrong password."
            return await render_template("login.html", error=error, next=target), 401
        return await render_template("login.html", error="Too many tries.", next=target), 429

    @review.post("/logout")
    async def logout() -> ResponseReturnValue:
        logins.end(session.get("review"), time.time())
        session.clear()
        return redirect("/login")

    async def listing() -> tuple[list[dict[str, Any]], int, int, dict[str, str]]:
        """The calls the request's filters and page ask for: rows, total, page, the filters."""
        query_filter, args = _filter_from_args()
        page = _page()
        rows, total = await records().list_calls(
            query_filter, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
        return rows, total, page, args

    @review.get("/calls")
    async def calls_page() -> ResponseReturnValue:
        rows, total, page, args = await listing()
        return await render_template(
            "calls.html",
            calls=rows,
            total=total,
            page=page,
            pages=max(1, math.ceil(total / PAGE_SIZE)),
            args=args,
            query={k: v for k, v in args.items() if k != "page"},
        )

    @review.get("/calls/<call_sid>")
    async def call_page(call_sid: str) -> ResponseReturnValue:
        call = await records().get_call(call_sid)
        if call is None:
            return "no such call", 404
        return await render_template("call.html", call=call, timeline=timeline(call))

    @review.get("/calls/<call_sid>/live")
    async def live(call_sid: str) -> ResponseReturnValue:
        """The call's turns as they come (server-sent events), behind the same login."""
        if not _CALL_SID.fullmatch(call_sid):
            return "no such call", 404
        response = await make_response(
            live_events(records(), call_sid),
            200,
            {"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"},
        )
        assert isinstance(response, Response)
        response.timeout = None  # it lasts as long as the call
        return response

    @review.get("/calls/<call_sid>/recording.wav")
    async def recording(call_sid: str) -> ResponseReturnValue:
        call = await records().get_call(call_sid)
        if call is None or not call["recording_path"]:
            return "no recording", 404
        path = await asyncio.to_thread(_inside, Path(call["recording_path"]), recordings_root)
        if path is None:
            return "no recording", 404
        response: Response = await send_file(path, mimetype="audio/wav", conditional=True)
        return response

    @review.get("/api/calls")
    async def api_calls() -> ResponseReturnValue:
        rows, total, page, _ = await listing()
        body: dict[str, object] = {
            "calls": [jsonable(row) for row in rows],
            "total": total,
            "page": page,
            "page_size": PAGE_SIZE,
        }
        return body

    @review.post("/api/calls/<call_sid>/<any(hangup, transfer, say):verb>")
    async def api_control(call_sid: str, verb: str) -> ResponseReturnValue:
        """An operator's action on a live call. JSON only: a cross-site form cannot send it,
        so a signed-in browser cannot be made to hang up a call."""
        if control is None:
            return {"error": "not available"}, 404
        if not request.is_json:
            return {"error": "send JSON (Content-Type: application/json)"}, 415
        body = await request.get_json(silent=True)
        words = ""
        if verb == "say":
            text = body.get("text") if isinstance(body, dict) else None
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_SAY_CHARS:
                return {"error": f"'text' must be 1 to {MAX_SAY_CHARS} characters"}, 400
            words = " ".join(text.split())
        action = _ACTIONS[verb]
        delivered = await control()(call_sid, action, words)
        if delivered == "not live":
            return {"error": "the call is not live"}, 404
        return {"call_sid": call_sid, "action": action, "delivered": delivered}, 202

    @review.get("/api/calls/<call_sid>")
    async def api_call(call_sid: str) -> ResponseReturnValue:
        call = await records().get_call(call_sid)
        if call is None:
            return {"error": "no such call"}, 404
        body: dict[str, object] = jsonable(call)
        return body

    return review


def _local_path(target: str) -> str:
    """`target` if it is a path on this site, else `/calls`: never a way off-site."""
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or parts.scheme
        or parts.netloc
        or any(ord(c) < 0x20 or c == "\x7f" for c in target)
    ):
        return "/calls"
    return target


def _basic_auth_password() -> str | None:
    """The password of an HTTP Basic `Authorization` header, if there is one."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic ") or len(header) > 1024:
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


def _filter_from_args() -> tuple[CallFilter, dict[str, str]]:
    args = {k: v.strip() for k, v in request.args.items() if v.strip()}

    def day(name: str, shift: int = 0) -> dt.datetime | None:
        raw = args.get(name)
        if raw is None:
            return None
        try:
            when = dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
            return when + dt.timedelta(days=shift)
        except (ValueError, OverflowError):  # not a date, or past the year 9999
            return None

    return (
        CallFilter(
            number=args.get("number"),
            direction=args.get("direction"),
            status=args.get("status"),
            since=day("from"),
            until=day("to", shift=1),  # the whole "to" day is included
            search=args.get("q"),
        ),
        args,
    )


def _page() -> int:
    raw = request.args.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
        return 1
    return min(max(1, int(raw)), MAX_PAGE)


def _inside(path: Path, root: Path) -> Path | None:
    """The recording file, if it exists and lies inside the recordings folder."""
    resolved = path.resolve()
    return resolved if root.resolve() in resolved.parents and resolved.is_file() else None

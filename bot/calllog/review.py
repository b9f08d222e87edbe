"""Review of the call log: login, pages (`/calls`), the JSON API (`/api/calls`), recordings.

Everything here needs the review password (`REVIEW_PASSWORD`); without it set, review is
off and every URL answers 403. Pages use a signed session cookie after `/login`; the JSON
API also takes HTTP Basic auth with the password, for scripts and dashboards.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from quart import Blueprint, Response, redirect, render_template, request, send_file, session
from quart.typing import ResponseReturnValue

from bot.calllog.core.view import jsonable, timeline
from bot.config import CallLogSettings
from bot.store.calls import CallFilter, CallRecords

__all__ = ["PAGE_SIZE", "review_blueprint"]

PAGE_SIZE: Final = 25
_DISABLED: Final = "call review is disabled: set REVIEW_PASSWORD to enable it"


def review_blueprint(settings: CallLogSettings, records: Callable[[], CallRecords]) -> Blueprint:
    """The review routes; `records` gives the call records once the app has started."""
    review = Blueprint("review", __name__, template_folder="templates")
    password = None if settings.review_password is None else settings.review_password.reveal()
    recordings_root = settings.recordings_path

    async def denied() -> ResponseReturnValue | None:
        """None when the request may see call data; otherwise the refusal."""
        api = request.path.startswith("/api/")
        if password is None:
            return ({"error": _DISABLED}, 403) if api else (_DISABLED, 403)
        if hmac.compare_digest(session.get("review", ""), _login_marker(password)):
            return None
        if api:
            if _basic_auth_ok(password):
                return None
            return {"error": "login required"}, 401, {"WWW-Authenticate": 'Basic realm="calls"'}
        query = request.query_string.decode("latin-1")
        here = request.path + ("?" + query if query else "")
        return await render_template("login.html", error=None, next=here), 401

    @review.before_request
    async def guard() -> ResponseReturnValue | None:
        if request.endpoint in ("review.login", "review.logout"):
            return None
        return await denied()

    @review.route("/login", methods=["GET", "POST"])
    async def login() -> ResponseReturnValue:
        if password is None:
            return _DISABLED, 403
        if request.method == "GET":
            next_url = request.args.get("next", "")
            return await render_template("login.html", error=None, next=next_url)
        form = await request.form
        target = form.get("next", "")
        if not target.startswith("/") or target.startswith("//"):
            target = "/calls"
        if hmac.compare_digest(form.get("password", ""), password):
            session["review"] = _login_marker(password)
            return redirect(target)
        await asyncio.sleep(0.5)  # slows down guessing
        return await render_template("login.html", error="Wrong password.", next=target), 401

    @review.post("/logout")
    async def logout() -> ResponseReturnValue:
        session.pop("review", None)
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

    @review.get("/api/calls/<call_sid>")
    async def api_call(call_sid: str) -> ResponseReturnValue:
        call = await records().get_call(call_sid)
        if call is None:
            return {"error": "no such call"}, 404
        body: dict[str, object] = jsonable(call)
        return body

    return review


def _login_marker(password: str) -> str:
    # Changing the password signs everybody out.
    return hashlib.sha256(b"review-login:" + password.encode()).hexdigest()[:32]


def _basic_auth_ok(password: str) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(decoded.partition(":")[2], password)


def _filter_from_args() -> tuple[CallFilter, dict[str, str]]:
    args = {k: v.strip() for k, v in request.args.items() if v.strip()}

    def day(name: str, shift: int = 0) -> dt.datetime | None:
        raw = args.get(name)
        if raw is None:
            return None
        try:
            return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC) + dt.timedelta(days=shift)
        except ValueError:
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
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        return 1


def _inside(path: Path, root: Path) -> Path | None:
    """The recording file, if it exists and lies inside the recordings folder."""
    resolved = path.resolve()
    return resolved if root.resolve() in resolved.parents and resolved.is_file() else None

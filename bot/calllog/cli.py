"""`bot calls list | show | export`: the call log in a terminal; and `bot calls hangup | transfer
| say`: an operator's action on a live call, through the server's API, whichever instance
serves the call.

The database and progress-bar libraries load only when a command runs, so `bot` starts
quickly for every other command.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import datetime as dt
import json
import re
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

from bot.calllog.core.view import jsonable, timeline
from bot.config import CallLogSettings

if TYPE_CHECKING:
    from bot.store.calls import CallFilter, CallRecords

__all__ = ["add_calls_parser", "run_calls"]

PROGRESS_FROM: Final = 200  # exports at least this large show a progress bar on stderr
CSV_FIELDS: Final = (
    "call_sid",
    "started_at",
    "ended_at",
    "direction",
    "from_number",
    "to_number",
    "status",
    "ended_by",
    "end_reason",
    "interruptions",
    "errors",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "recording_path",
    "transcript",
)


def add_calls_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    calls = commands.add_parser("calls", help="review the call log")
    sub = calls.add_subparsers(dest="calls_command", required=True)

    def filters(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--number", help="calls from or to a number containing this")
        parser.add_argument("--direction", help="inbound, outbound-api, …")
        parser.add_argument("--status", help="completed, in-progress, ended, busy, …")
        parser.add_argument("--since", type=_date, help="started on or after YYYY-MM-DD")
        parser.add_argument("--until", type=_date, help="started on or before YYYY-MM-DD")
        parser.add_argument("--search", help="text in the transcript")

    listing = sub.add_parser("list", help="calls, newest first")
    filters(listing)
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--page", type=int, default=1)
    show = sub.add_parser("show", help="one call with its transcript")
    show.add_argument("call_sid")
    export = sub.add_parser("export", help="calls as JSON Lines or CSV")
    filters(export)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    for verb, what in (
        ("hangup", "hang up a live call"),
        ("transfer", "transfer a live call to TRANSFER_TO"),
        ("say", "have the bot say something in a live call"),
    ):
        action = sub.add_parser(verb, help=what)
        action.add_argument("call_sid")
        if verb == "say":
            action.add_argument("text")
        action.add_argument(
            "--url", help="the bridge's base URL (default: PUBLIC_URL, else http://127.0.0.1:$PORT)"
        )


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw!r}") from exc


def _filter(args: argparse.Namespace) -> CallFilter:
    from bot.store.calls import CallFilter

    def start(day: dt.date | None, shift: int = 0) -> dt.datetime | None:
        if day is None:
            return None
        return dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(days=shift)

    return CallFilter(
        number=args.number,
        direction=args.direction,
        status=args.status,
        since=start(args.since),
        until=start(args.until, 1),
        search=args.search,
    )


def run_calls(args: argparse.Namespace, settings: CallLogSettings, base_url: str) -> int:
    if args.calls_command in ("hangup", "transfer", "say"):
        return asyncio.run(_control(args, settings, args.url or base_url))
    if args.calls_command == "export" and args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as output:
            return asyncio.run(_run(args, settings, output))
    return asyncio.run(_run(args, settings, sys.stdout))


async def _run(args: argparse.Namespace, settings: CallLogSettings, output: TextIO) -> int:
    from bot.store.store import Store

    store = await Store.open(settings.database)
    try:
        if args.calls_command == "list":
            return await _list(store.calls, args)
        if args.calls_command == "show":
            return await _show(store.calls, args.call_sid)
        return await _export(store.calls, args, output)
    finally:
        await store.close()


async def _control(args: argparse.Namespace, settings: CallLogSettings, base_url: str) -> int:
    """POST the action to the API, authenticated with the review password."""
    import aiohttp

    if settings.review_password is None:
        print("bot: REVIEW_PASSWORD is needed to act on calls", file=sys.stderr)
        return 2
    token = base64.b64encode(f":{settings.review_password.reveal()}".encode()).decode()
    url = f"{base_url.rstrip('/')}/api/calls/{args.call_sid}/{args.calls_command}"
    body = {"text": args.text} if args.calls_command == "say" else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.post(url, json=body, headers={"Authorization": f"Basic {token}"}) as response,
        ):
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(f"bot: could not reach {base_url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    if response.status != 202:
        print(f"bot: {answer.get('error', response.status)}", file=sys.stderr)
        return 1
    where = "this instance" if answer["delivered"] == "here" else "the instance serving it"
    print(f"{args.calls_command}: sent to {where} ({args.call_sid})")
    return 0


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


async def _list(store: CallRecords, args: argparse.Namespace) -> int:
    limit = max(1, args.limit)
    rows, total = await store.list_calls(
        _filter(args), limit=limit, offset=(max(1, args.page) - 1) * limit
    )
    header = ("started (UTC)", "call", "from", "to", "direction", "status", "turns", "ended by")
    table = [header] + [
        (
            _when(r["started_at"]),
            r["call_sid"],
            r["from_number"] or "?",
            r["to_number"] or "?",
            r["direction"] or "",
            r["status"],
            str(r["turn_count"]),
            r["ended_by"] or "",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    print(f"{len(rows)} of {total} call(s)")
    return 0


def _clock(ms: int | None) -> str:
    if ms is None:
        return " -:--.-"
    return f"{ms // 60000:2d}:{(ms // 1000) % 60:02d}.{(ms % 1000) // 100}"


async def _show(store: CallRecords, call_sid: str) -> int:
    call = await store.get_call(call_sid)
    if call is None:
        print(f"bot calls: no call {call_sid}", file=sys.stderr)
        return 1
    numbers = f"{call['from_number'] or '?'} -> {call['to_number'] or '?'}"
    answered = f", answered by {call['answered_by']}" if call.get("answered_by") else ""
    print(f"{call['call_sid']}  {numbers}  ({call['direction']}{answered})")
    print(
        f"started {_when(call['started_at'])}  ended {_when(call['ended_at'])}  "
        f"status {call['status']}"
    )
    print(f"ended by {call['ended_by'] or '-'}: {call['end_reason'] or '-'}")
    print(
        f"model {call['model']} via {call['provider']} ({call['dialect']}, {call['audio_mode']}); "
        f"tokens {call['input_tokens']} in / {call['output_tokens']} out; "
        f"interruptions {call['interruptions']}; errors {call['errors']}"
    )
    if call["recording_path"]:
        print(f"recording {call['recording_path']}")
    print()
    for entry in timeline(call):
        when = _clock(entry["at_ms"])
        if entry.get("event"):
            print(f"[{when}] -- {entry['kind']}: {entry['detail']}")
            continue
        who = {"caller": "caller", "agent": "agent"}.get(entry["speaker"], "bot")
        latency = f" ({entry['latency_ms']} ms)" if entry["latency_ms"] is not None else ""
        if entry["interrupted"] and "heard" in entry:
            print(
                f"[{when}] {who}{latency}: {entry['heard']} [not heard: {entry['unheard'].strip()}]"
            )
        else:
            print(f"[{when}] {who}{latency}: {entry['text'] or '…'}")
    return 0


async def _export(store: CallRecords, args: argparse.Namespace, output: TextIO) -> int:
    query_filter = _filter(args)
    total = await store.count_calls(query_filter)
    writer = None
    if args.format == "csv":
        writer = csv.DictWriter(output, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
    from tqdm import tqdm

    with tqdm(total=total, unit="call", file=sys.stderr, disable=total < PROGRESS_FROM) as bar:
        async for call in store.iter_calls(query_filter):
            if writer is not None:
                writer.writerow({k: _inert(v) for k, v in _flat(call).items()})
            else:
                output.write(json.dumps(jsonable(call), ensure_ascii=False) + "\n")
            bar.update()
    print(f"exported {total} call(s)", file=sys.stderr)
    return 0


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final = re.compile(r"[+-]?[0-9][0-9 .]*")


def _inert(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one starting like a formula gets a quote first
    (a caller's words can be "=HYPERLINK(…)"), except plain numbers such as +15551230001."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        if not _PLAIN_NUMBER.fullmatch(value):
            return "'" + value
    return value


def _flat(call: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = jsonable({k: v for k, v in call.items() if k not in ("turns", "events")})
    lines = []
    for turn in call["turns"]:
        said = turn["heard_text"] if turn["interrupted"] else turn["text"]
        lines.append(f"{turn['speaker']}: {said or ''}")
    row["transcript"] = "\n".join(lines)
    return row

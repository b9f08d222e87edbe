"""`bot call NUMBER`, `bot campaign run contacts.csv` and `bot campaign status NAME`.

The database, Twilio and progress-bar libraries load only when a command runs, so `bot`
starts quickly for every other command.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.core.turn_taking import EAGERNESS, NOISE_REDUCTIONS, TURN_DETECTIONS
from bot.errors import BotError
from bot.outbound.core.campaign import (
    CampaignOptions,
    Contact,
    Policy,
    Window,
    parse_contacts,
    parse_dnc,
    plan,
)
from bot.outbound.core.request import OutboundCall
from bot.outbound.placing import caller_of, outbound_problems

if TYPE_CHECKING:
    from bot.twilio_rest import TwilioRest

__all__ = ["add_call_parser", "add_campaign_parser", "run_call_command", "run_campaign_command"]

FINAL = ("done", "failed", "skipped", "unknown")


def _duration(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)\s*([smh])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"a duration such as 30m, 2h or 90s, not {text!r}")
    value, unit = int(match.group(1)), match.group(2)
    return dt.timedelta(seconds=value * {"s": 1, "m": 60, "h": 3600}[unit])


def _window(text: str) -> Window:
    try:
        return Window.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_campaign_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    campaign = commands.add_parser("campaign", help="call a list of contacts")
    sub = campaign.add_subparsers(dest="campaign_command", required=True)
    run = sub.add_parser(
        "run", help="call every contact in a CSV (phone column, others are variables)"
    )
    run.add_argument("contacts", type=Path)
    run.add_argument("--name", help="campaign name (default: the file name); reuse it to resume")
    run.add_argument("--concurrency", type=int, default=2, help="calls at once (default 2)")
    run.add_argument("--cps", type=float, default=1.0, help="new calls per second (default 1)")
    run.add_argument(
        "--hours", type=_window, default=Window(), help="local calling hours (default 09:00-20:00)"
    )
    run.add_argument(
        "--timezone", default="America/New_York", help="for rows without a timezone column"
    )
    run.add_argument("--dnc", type=Path, help="do-not-call list: one number per line")
    run.add_argument("--max-attempts", type=int, default=3)
    run.add_argument(
        "--retry-after",
        type=_duration,
        default=dt.timedelta(minutes=30),
        help="first retry delay, doubled each time (default 30m)",
    )
    run.add_argument("--instructions", help="instructions for every call; {column} takes a value")
    run.add_argument("--greeting", help="what the bot says first")
    _turn_taking_options(run)
    run.add_argument("--dry-run", action="store_true", help="show what would happen; call nobody")
    status = sub.add_parser("status", help="where a campaign stands")
    status.add_argument("name")


def run_campaign_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.campaign_command == "status":
        return asyncio.run(_status(settings, args.name))
    try:
        text = args.contacts.read_text(encoding="utf-8-sig")
        dnc = parse_dnc(args.dnc.read_text()) if args.dnc else frozenset()
    except OSError as exc:
        print(f"bot campaign: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    contacts, problems = parse_contacts(text, args.timezone)
    for problem in problems:
        print(f"bot campaign: {args.contacts}: {problem}", file=sys.stderr)
    if not contacts:
        print("bot campaign: no contact to call", file=sys.stderr)
        return 2
    options = CampaignOptions(
        name=args.name or args.contacts.stem,
        policy=Policy(max(1, args.max_attempts), args.retry_after),
        window=args.hours,
        concurrency=max(1, args.concurrency),
        calls_per_second=max(0.01, args.cps),
        instructions=args.instructions,
        greeting=args.greeting,
        turn_taking=_turn_taking(args),
    )
    if not args.dry_run:
        missing = outbound_problems(settings)
        if missing:
            print("bot campaign: " + "; ".join(missing), file=sys.stderr)
            return 2
    return asyncio.run(_run(settings, options, contacts, dnc, args.dry_run))


async def _run(
    settings: Settings,
    options: CampaignOptions,
    contacts: list[Contact],
    dnc: frozenset[str],
    dry_run: bool,
) -> int:
    from tqdm import tqdm

    from bot.outbound.campaign import CampaignRunner
    from bot.store.store import Store

    store = await Store.open(settings.calllog.database)
    try:
        if dry_run:
            states = await store.campaigns.states(options.name)
            actions = plan(contacts, dnc, states, options.window, dt.datetime.now(dt.UTC))
            for contact, action in actions:
                print(f"{contact.phone:<16} {contact.timezone:<22} {action}")
            print(f"dry run of {options.name}: {len(actions)} contact(s); nobody was called")
            return 0
        rest = _rest(settings)
        try:
            runner = CampaignRunner(
                store,
                rest,
                caller_of(settings),
                options,
                max_calls_total=settings.call.max_calls_total,
            )
            added = await runner.load(contacts, dnc)
            print(
                f"campaign {options.name}: {added} new contact(s), {len(contacts) - added} known",
                file=sys.stderr,
            )
            with tqdm(total=len(contacts), unit="contact", file=sys.stderr) as bar:

                def progress(counts: dict[str, int]) -> None:
                    bar.n = sum(counts.get(state, 0) for state in FINAL)
                    bar.set_postfix({k: v for k, v in sorted(counts.items()) if v}, refresh=True)

                runner.on_progress = progress
                counts = await runner.run()
        finally:
            await rest.close()
        print(_summary(options.name, counts))
        return 0
    finally:
        await store.close()


async def _status(settings: Settings, name: str) -> int:
    from bot.store.store import Store

    store = await Store.open(settings.calllog.database)
    try:
        counts = await store.campaigns.counts(name)
    finally:
        await store.close()
    if not counts:
        print(f"bot campaign: no campaign named {name!r}", file=sys.stderr)
        return 1
    print(_summary(name, counts))
    return 0


def _rest(settings: Settings) -> TwilioRest:
    from bot.twilio_rest import TwilioRest

    twilio = settings.twilio
    assert twilio.account_sid is not None and twilio.auth_token is not None
    return TwilioRest(twilio.account_sid, twilio.auth_token.reveal(), twilio.api_url)


def _summary(name: str, counts: dict[str, int]) -> str:
    parts = ", ".join(f"{state} {n}" for state, n in sorted(counts.items()) if n)
    return f"campaign {name}: {parts}"


# ---- bot call ------------------------------------------------------------------------------


def add_call_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    call = commands.add_parser("call", help="place one outbound call")
    call.add_argument("to", help="the number to call, E.164 (+15551234567)")
    call.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for the bot's instructions",
    )
    call.add_argument("--instructions", help="instructions for this call; {name} takes a --var")
    call.add_argument("--greeting", help="what the bot says first")
    _turn_taking_options(call)


def _turn_taking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--turn-detection", choices=TURN_DETECTIONS, help="instead of TURN_DETECTION"
    )
    parser.add_argument("--vad-eagerness", choices=EAGERNESS, help="instead of VAD_EAGERNESS")
    parser.add_argument(
        "--noise-reduction", choices=NOISE_REDUCTIONS, help="instead of NOISE_REDUCTION"
    )


def _turn_taking(args: argparse.Namespace) -> dict[str, str]:
    chosen = {
        "turn_detection": args.turn_detection,
        "vad_eagerness": args.vad_eagerness,
        "noise_reduction": args.noise_reduction,
    }
    return {name: value for name, value in chosen.items() if value}


def run_call_command(args: argparse.Namespace, settings: Settings) -> int:
    problems = outbound_problems(settings)
    variables = {}
    for spec in args.var:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            problems.append(f"--var wants NAME=VALUE, got {spec!r}")
        variables[name] = value
    if problems:
        print("bot call: " + "; ".join(problems), file=sys.stderr)
        return 2
    call = OutboundCall(
        args.to, variables, args.instructions, args.greeting, turn_taking=_turn_taking(args)
    )

    async def place() -> str:
        from bot.outbound.placing import place_call
        from bot.store.store import Store

        rest = _rest(settings)
        store = await Store.open(settings.calllog.database)
        try:
            return await place_call(caller_of(settings), rest, store.calls, call)
        finally:
            await rest.close()
            await store.close()

    try:
        call_sid = asyncio.run(place())
    except (ValueError, BotError) as exc:
        print(f"bot call: {exc}", file=sys.stderr)
        return 1
    print(call_sid)
    return 0

"""Command line: `bot serve | simulate | calls | call | campaign | realtime-server`; each
command reads its settings once and hands over to its feature."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from bot.calllog.cli import add_calls_parser, run_calls
from bot.config import (
    LOCAL_REALTIME_KEY_FILE,
    Settings,
    environment,
    local_realtime_key,
    simulator_defaults,
)
from bot.errors import ConfigError
from bot.log import configure_logging
from bot.outbound.cli import (
    add_call_parser,
    add_campaign_parser,
    run_call_command,
    run_campaign_command,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bot", description="Twilio ⇄ Realtime voice bot bridge")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the bridge (settings from the environment and .env)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving calls (default WORKERS: one per core with PostgreSQL, else 1)",
    )

    sim = commands.add_parser("simulate", help="place a simulated phone call against a bridge")
    sim.add_argument(
        "url",
        nargs="?",
        help="the bridge's base URL (default: PUBLIC_URL, else http://127.0.0.1:$PORT)",
    )
    sim.add_argument("--say", type=Path, help="WAV file the caller speaks (any rate)")
    sim.add_argument(
        "--agent",
        type=Path,
        metavar="WAV",
        help="on a listened call (CALL_MODE=transcribe): what the person who answers says",
    )
    sim.add_argument("--record", type=Path, help="write what the caller heard to this WAV")
    sim.add_argument(
        "--barge-in-at", type=float, metavar="SECONDS", help="start speaking over the bot"
    )
    sim.add_argument("--barge-in", type=Path, metavar="WAV", help="what to say when barging in")
    sim.add_argument("--duration", type=float, metavar="SECONDS", help="hang up after this long")
    sim.add_argument("--fast", action="store_true", help="send audio as fast as possible")
    sim.add_argument(
        "--dtmf", action="append", default=[], metavar="DIGIT@SECONDS", help="press a key"
    )
    sim.add_argument(
        "--auth-token",
        help="sign webhooks with this token (default: TWILIO_AUTH_TOKEN or the local secret)",
    )
    sim.add_argument("--stream-url", help="open this stream URL instead of the one in the TwiML")
    add_calls_parser(commands)
    add_call_parser(commands)
    add_campaign_parser(commands)
    local = commands.add_parser(
        "realtime-server", help="run only the local Realtime backend (offline STT, demo agent, TTS)"
    )
    local.add_argument("--port", type=int, default=8765, help="default 8765; 0 picks a free one")
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; `environ` replaces the process environment and `.env` if given."""
    args = _parser().parse_args(argv)
    env = dict(environ) if environ is not None else environment()
    if args.command == "simulate":
        return _simulate(args, env)
    if args.command == "serve" and args.workers is not None:
        env = {**env, "WORKERS": str(args.workers)}
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings)
    if args.command == "calls":
        return run_calls(args, settings.calllog, settings.server.base_url)
    if args.command == "call":
        return run_call_command(args, settings)
    if args.command == "realtime-server":
        return _realtime_server(args.port, settings)
    return run_campaign_command(args, settings)


def _serve(settings: Settings) -> int:
    from bot.server import serve

    configure_logging(settings.server.log_level)
    try:
        serve(settings)
    except ConfigError as exc:  # e.g. a BOT_TOOLS module that does not import
        print(f"bot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, or the address is not ours
        where = f"{settings.server.host}:{settings.server.port}"
        print(f"bot: cannot listen on {where}: {exc.strerror} (set PORT or HOST)", file=sys.stderr)
        return 1
    return 0


def _realtime_server(port: int, settings: Settings) -> int:
    """The local backend alone, on loopback: any Realtime client can use it."""
    import logging

    import uvicorn

    from bot.localrt.services import local_providers
    from bot.localrt.web import LOCAL_REALTIME_PATH, create_realtime_app
    from bot.server import bind_socket, server_config

    configure_logging(settings.server.log_level)
    try:
        providers = local_providers(settings.local)
    except ConfigError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 2
    data_dir = settings.server.data_dir
    app = create_realtime_app(providers, local_realtime_key(settings.local, data_dir))
    sock = bind_socket("127.0.0.1", port)
    logging.getLogger("bot.realtime_server").info(
        "listening on ws://127.0.0.1:%d%s (loopback only; the key is %s)",
        sock.getsockname()[1],
        LOCAL_REALTIME_PATH,
        "LOCAL_REALTIME_KEY"
        if settings.local.realtime_key
        else f"in {data_dir / LOCAL_REALTIME_KEY_FILE}",
    )
    uvicorn.Server(server_config(app)).run(sockets=[sock])  # stops on SIGTERM or Ctrl-C
    return 0


def _simulate(args: argparse.Namespace, env: dict[str, str]) -> int:
    from bot.simulator import load_wav_as_ulaw, simulate, write_wav

    default_url, default_token, account_sid = simulator_defaults(env)
    dtmf = []
    for spec in args.dtmf:
        digit, _, at = spec.partition("@")
        try:
            dtmf.append((float(at or 0), digit))
        except ValueError:
            print(f"bot simulate: --dtmf wants DIGIT@SECONDS, got {spec!r}", file=sys.stderr)
            return 2
    try:
        say = load_wav_as_ulaw(args.say) if args.say else b""
        barge = load_wav_as_ulaw(args.barge_in) if args.barge_in else b""
        agent = load_wav_as_ulaw(args.agent) if args.agent else b""
    except (OSError, EOFError, ValueError) as exc:
        print(f"bot simulate: cannot read WAV: {exc}", file=sys.stderr)
        return 2
    url = args.url or default_url
    try:
        result = asyncio.run(
            simulate(
                url,
                auth_token=args.auth_token or default_token,
                account_sid=account_sid,
                say=say,
                barge_in_at_s=args.barge_in_at if args.barge_in else None,
                barge_in=barge,
                duration_s=args.duration,
                fast=args.fast,
                stream_url=args.stream_url,
                dtmf=dtmf,
                agent=agent,
            )
        )
    except OSError as exc:
        print(f"bot simulate: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if args.record:
        write_wav(args.record, result.output_ulaw)
    print(result.summary())
    return 0 if result.webhook_status == 200 else 1

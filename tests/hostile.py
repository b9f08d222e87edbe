"""What an attacker sends, built by hand: huge unsigned forms, oversized WebSocket frames,
junk sockets. Used by the regression tests of each finding and by the hostile-load test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import websockets
from twilio.request_validator import RequestValidator

from bot.core import twilio

MB = 1024 * 1024


def rss_bytes(pid: int, peak: bool = False) -> int:
    """Resident memory of a process now, or its peak so far, from /proc."""
    field = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


def form_body(fields: int = 1_500_000) -> bytes:
    """An urlencoded form of `fields` short fields: 1.5 million make 15 MB."""
    return b"&".join(b"f%d=x" % i for i in range(fields))


async def huge_form(url: str, body: bytes, signature: str | None = None) -> float:
    """POST `body` as an urlencoded form to `url`; returns the seconds until the server
    answered (or dropped the connection)."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n"
        + (f"X-Twilio-Signature: {signature}\r\n" if signature else "")
        + "Connection: close\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await _open(url)
    try:
        writer.write(head)
        for start in range(0, len(body), MB):
            writer.write(body[start : start + MB])
            await writer.drain()
            if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
                break  # answered before the body was sent
        await asyncio.wait_for(reader.read(1), 30)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return loop.time() - started


async def _upgrade(
    ws_url: str,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    """A WebSocket handshake by hand; True if the server accepted it."""
    reader, writer = await _open(ws_url.replace("ws://", "http://"))
    parts = urlsplit(ws_url)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, b" 101 " in status.split(b"\r\n", 1)[0]


async def raw_text_frame(ws_url: str, payload: bytes) -> None:
    """Open a WebSocket and send `payload` as one text frame, UTF-8 or not, then leave."""
    reader, writer, _ = await _upgrade(ws_url)
    mask = secrets.token_bytes(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # payload < 126 bytes
    await writer.drain()
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(reader.read(), 2)  # until the server closes
    writer.close()


async def huge_frame(ws_url: str, size: int = 256 * MB) -> bool:
    """Open a WebSocket and send one text frame of `size` bytes, by hand, so that the client
    holds only a megabyte at a time. True if the server cut it short."""
    _, writer, accepted = await _upgrade(ws_url)
    if not accepted:
        writer.close()
        return True
    mask = secrets.token_bytes(4)
    header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + mask
    cut = False
    try:
        writer.write(header)
        chunk = bytes(MB)  # masking zeros gives the mask: content does not matter here
        sent = 0
        while sent < size:  # like an attacker, ignore a close: stop only when writes fail
            writer.write(chunk[: min(MB, size - sent)])
            await asyncio.wait_for(writer.drain(), 5)
            sent += MB
    except (ConnectionError, OSError, TimeoutError):
        cut = True
    finally:
        writer.close()
    return cut


async def junk_socket(url: str, payload: bytes) -> None:
    """Connect, send junk, go away."""
    try:
        reader, writer = await _open(url)
        writer.write(payload)
        await writer.drain()
        writer.close()
    except (ConnectionError, OSError):
        pass


# ---- the hostile-load loop ---------------------------------------------------------------


async def _signed_webhook(url: str, secret: str, form: dict[str, str]) -> str:
    """A voice webhook signed as Twilio would: the attacker here is a careless operator or
    a compromised upstream, whose input is signed but still hostile."""
    voice = url + "/twilio/voice"
    signature = RequestValidator(secret).compute_signature(voice, form)
    async with aiohttp.ClientSession() as http:
        async with http.post(voice, data=form, headers={"X-Twilio-Signature": signature}) as r:
            return await r.text()


async def signed_stream(url: str, secret: str, form: dict[str, str], frames: list[str]) -> None:
    """A signed call whose stream then sends `frames` (after its `start`) and hangs up."""
    twiml = await _signed_webhook(url, secret, form)
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        return
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    stream_sid = "MZ" + secrets.token_hex(16)
    try:
        async with websockets.connect(stream.attrib["url"], max_size=None) as ws:
            await ws.send(twilio.phone_start(stream_sid, form["CallSid"], "AC" + "3" * 32, params))
            for frame in frames:
                await ws.send(frame)
                await asyncio.sleep(0.005)
            await ws.send(twilio.phone_stop(stream_sid, form["CallSid"], "AC" + "3" * 32, 99))
    except (OSError, websockets.WebSocketException):
        pass


def _bad_timestamp_frames() -> list[str]:
    frames = []
    stamps: list[object] = [20, 10**20, -5, "²", 1_800_000, 10**9, "9" * 5000, 2**31 + 7, 40]
    for stamp in stamps:
        frame = json.loads(twilio.phone_media("MZ" + "0" * 32, b"\xff" * 160, 0))
        frame["media"]["timestamp"] = stamp if isinstance(stamp, int) else str(stamp)
        frames.append(json.dumps(frame))
        frames.append(twilio.phone_dtmf("MZ" + "0" * 32, "5", 1))
    return frames


def call_form(**more: str) -> dict[str, str]:
    return {
        "CallSid": "CA" + secrets.token_hex(16),
        "AccountSid": "AC" + "3" * 32,
        "From": "+15550100009",
        "To": "+15550100002",
        "Direction": "inbound",
        **more,
    }


async def attack(url: str, secret: str, seconds: float) -> int:
    """Rounds of every kind of hostile input, for `seconds`; returns the rounds run."""
    body = form_body()
    media = url.replace("http://", "ws://") + "/twilio/media"
    forged = base64.b64encode(os.urandom(20)).decode()
    junk = [
        os.urandom(4096),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS hello
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n",
        b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nab",
        b"GET /twilio/media HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n" + os.urandom(512),
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    rounds = 0
    while loop.time() < deadline:
        rounds += 1
        long = "9" * 4000
        await asyncio.gather(
            *(huge_form(url + "/twilio/voice", body, s) for s in (None, "x" * 28, forged)),
            huge_form(url + "/twilio/status", body, forged),
            huge_frame(media, 256 * MB),
            *(huge_frame(media, 16 * MB) for _ in range(4)),
            *(junk_socket(url, payload) for payload in junk),
            signed_stream(url, secret, call_form(), _bad_timestamp_frames()),
            signed_stream(
                url,
                secret,
                call_form(
                    From="+1" + long,
                    To="+1555\x00\x01" + long,
                    CallerName="\ud7ff" + "é" * 3000,
                    FromCity="<x>&" * 500,
                ),
                [twilio.phone_media("MZ" + "0" * 32, b"\xff" * 160, 0)] * 5,
            ),
            return_exceptions=True,
        )
    return rounds


if __name__ == "__main__":
    import sys
    import time

    # A real attacker's CPU is on its own machines; here it must not take the server's.
    os.nice(10)
    rounds = asyncio.run(attack(sys.argv[1], os.environ["HOSTILE_SECRET"], float(sys.argv[2])))
    print(f"{rounds} rounds, {time.process_time():.1f} s of CPU", flush=True)

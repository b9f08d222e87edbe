"""What an attacker sends, built by hand: huge unsigned forms, oversized WebSocket frames,
junk sockets. Used by the regression tests of each finding and by the hostile-load test."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

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


async def huge_frame(ws_url: str, size: int = 256 * MB) -> bool:
    """Open a WebSocket and send one text frame of `size` bytes, by hand, so that the client
    holds only a megabyte at a time. True if the server cut it short."""
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
    if b" 101 " not in status.split(b"\r\n", 1)[0]:
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

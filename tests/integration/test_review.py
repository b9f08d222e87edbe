"""Review access, the JSON API, /metrics and the `bot calls` CLI over a known call log."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.cli import main
from bot.config import Settings
from bot.store.store import Store
from tests.conftest import RunningApp, run_app, settings_from
from tests.seed import CUT_CALL, ORDER_CALL, seed

PASSWORD = "correct horse battery"
CALL_DATA_URLS = [
    "/calls",
    f"/calls/{ORDER_CALL}",
    f"/calls/{ORDER_CALL}/recording.wav",
    "/api/calls",
    f"/api/calls/{ORDER_CALL}",
    "/api/calls?search=order",
]


async def seeded(settings: Settings, fillers: int = 0) -> None:
    store = await Store.open(settings.calllog.database)
    await seed(store.calls, settings.calllog.recordings_path, fillers)
    await store.close()


@pytest.fixture
async def review_app(database_env: dict[str, str]) -> AsyncIterator[RunningApp]:
    settings = settings_from(database_env, REVIEW_PASSWORD=PASSWORD)
    await seeded(settings)
    async with run_app(settings) as app:
        yield app


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"api:{password}".encode()).decode()}


async def test_no_call_data_without_the_login(review_app: RunningApp) -> None:
    async with aiohttp.ClientSession() as http:
        for path in CALL_DATA_URLS:
            async with http.get(review_app.url + path, allow_redirects=False) as response:
                assert response.status == 401, path
                body = await response.text()
                assert "4417" not in body and "+1555123" not in body
        for path in CALL_DATA_URLS:
            async with http.get(review_app.url + path, headers=basic("wrong password")) as r:
                assert r.status == 401, path
        async with http.post(
            review_app.url + "/login", data={"password": "guess"}, allow_redirects=False
        ) as response:
            assert response.status == 401


async def test_review_is_off_without_a_password(base_settings: Settings) -> None:
    await seeded(base_settings)
    async with run_app(base_settings) as app, aiohttp.ClientSession() as http:
        for path in [*CALL_DATA_URLS, "/login"]:
            async with http.get(app.url + path, headers=basic("anything")) as response:
                assert response.status == 403, path


async def test_pages_after_login(review_app: RunningApp) -> None:
    # The default jar ignores cookies of IP-address hosts such as 127.0.0.1.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            review_app.url + "/login",
            data={"password": PASSWORD, "next": f"/calls/{CUT_CALL}"},
            allow_redirects=False,
        ) as response:
            assert response.status == 302
            assert response.headers["Location"] == f"/calls/{CUT_CALL}"
            cookie = response.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        async with http.get(review_app.url + "/calls") as response:
            page = await response.text()
            assert response.status == 200
            assert page.index(CUT_CALL) < page.index(ORDER_CALL)  # newest first
        async with http.get(review_app.url + "/calls?q=4417&direction=inbound") as response:
            page = await response.text()
            assert ORDER_CALL in page and CUT_CALL not in page
        async with http.get(review_app.url + f"/calls/{CUT_CALL}") as response:
            page = await response.text()
            assert '<span class="heard">Hello, this is Acme calling</span>' in page
            assert '<del class="unheard"' in page and "appointment tomorrow at ten." in page
        async with http.get(review_app.url + f"/calls/{ORDER_CALL}/recording.wav") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "audio/wav"
            assert (await response.read())[:4] == b"RIFF"
        async with http.post(review_app.url + "/logout", allow_redirects=False) as response:
            assert response.status == 302
        async with http.get(review_app.url + "/calls") as response:
            assert response.status == 401


async def test_json_api(review_app: RunningApp) -> None:
    async with aiohttp.ClientSession(headers=basic(PASSWORD)) as http:
        async with http.get(review_app.url + "/api/calls") as response:
            listing = await response.json()
        assert listing["total"] == 2 and listing["page_size"] == 25
        assert [c["call_sid"] for c in listing["calls"]] == [CUT_CALL, ORDER_CALL]
        filters = {
            "number=5557770003": [CUT_CALL],
            "direction=outbound-api": [CUT_CALL],
            "status=completed": [ORDER_CALL],
            "status=ended": [CUT_CALL],
            "from=2026-11-21": [CUT_CALL],
            "to=2026-11-20": [ORDER_CALL],
            "q=WHO IS THIS": [CUT_CALL],
        }
        for query, expected in filters.items():
            async with http.get(review_app.url + "/api/calls?" + query) as response:
                found = [c["call_sid"] for c in (await response.json())["calls"]]
                assert found == expected, query
        async with http.get(review_app.url + f"/api/calls/{ORDER_CALL}") as response:
            call = await response.json()
        assert call["started_at"] == "2026-11-20T09:30:00+00:00"
        assert [t["text"] for t in call["turns"]][0] == "Hi, where is my order 4417?"
        assert call["turns"][1]["latency_ms"] == 810
        assert [e["kind"] for e in call["events"]] == ["tool", "dtmf", "interruption"]
        assert call["events"][0]["data"]["name"] == "get_order_status"
        assert call["total_tokens"] == 200
        async with http.get(review_app.url + "/api/calls/CA" + "9" * 32) as response:
            assert response.status == 404


async def test_metrics(base_env: dict[str, str]) -> None:
    from bot.simulator import simulate
    from tests.conftest import LOCAL_SECRET
    from tests.fake_realtime import FakeRealtime, pcm16_tone

    async with FakeRealtime(answer=pcm16_tone(500, 0.4), vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.8)
            async with aiohttp.ClientSession() as http, http.get(app.url + "/metrics") as r:
                text = await r.text()
    assert 'bot_calls_total{outcome="caller"} 1.0' in text
    assert "bot_active_calls 0.0" in text
    frames_in = float(re.search(r'bot_media_frames_total\{direction="in"\} (\S+)', text).group(1))
    frames_out = float(re.search(r'bot_media_frames_total\{direction="out"\} (\S+)', text).group(1))
    # The answer came in 100 ms deltas (the fake's default): one media message each.
    assert frames_in == pytest.approx(40, abs=2) and frames_out == 4
    assert "bot_barge_ins_total 0.0" in text
    assert "bot_turn_latency_seconds_bucket" in text


async def run_cli(
    settings: Settings, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`bot calls …` as the command line runs it, in a thread with its own event loop."""
    calllog = settings.calllog
    environ = {"DATABASE_URL": calllog.database_url or f"sqlite:///{calllog.data_dir}/calls.db"}
    code = await asyncio.to_thread(main, ["calls", *args], environ)
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_list_show_and_export(
    database_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await seeded(database_settings, fillers=250)
    code, out, _ = await run_cli(
        database_settings, capsys, "list", "--search", "order", "--limit", "5"
    )
    assert code == 0
    assert ORDER_CALL in out and "+15551230001" in out and "1 of 1 call(s)" in out
    code, out, _ = await run_cli(database_settings, capsys, "show", CUT_CALL)
    assert code == 0
    assert "bot: Hello, this is Acme calling [not heard: about your appointment" in out
    assert "interruption: caller spoke over the bot" in out
    code, out, err = await run_cli(database_settings, capsys, "export", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 252
    assert "252/252" in err  # the progress bar of a large export
    target = tmp_path / "calls.csv"
    code, _, _ = await run_cli(
        database_settings,
        capsys,
        "export",
        "--format",
        "csv",
        "--direction",
        "outbound-api",
        "-o",
        str(target),
    )
    rows = target.read_text().splitlines()
    assert code == 0 and rows[0].startswith("call_sid,started_at")
    assert CUT_CALL in target.read_text() and "caller: Sorry, who is this?" in target.read_text()
    code, _, err = await run_cli(database_settings, capsys, "show", "CA" + "9" * 32)
    assert code == 1 and "no call" in err


# ---- issue 9, finding 6 and the review's smaller faults -----------------------------------


def _session_payload(set_cookie: str) -> str:
    """What the browser holds: the session cookie's payload, decoded (it is signed, not
    encrypted)."""
    import zlib

    value = set_cookie.split("session=", 1)[1].split(";", 1)[0]
    payload = value.lstrip(".").split(".", 1)[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if value.startswith(".") else raw).decode()


async def _form_guesses(http: aiohttp.ClientSession, url: str, count: int) -> list[int]:
    """`count` wrong passwords through the login form at once; their statuses."""

    async def guess(n: int) -> int:
        async with http.post(
            url + "/login", data={"password": f"guess {n}"}, allow_redirects=False
        ) as response:
            return response.status

    return await asyncio.gather(*(guess(n) for n in range(count)))


async def test_password_guessing_is_throttled_per_address_and_in_parallel(
    review_app: RunningApp,
) -> None:
    """300 Basic guesses took 0.4 s; 100 parallel form logins took 0.6 s, all compared."""
    async with aiohttp.ClientSession() as http:
        statuses = []
        for n in range(300):
            async with http.get(
                review_app.url + "/api/calls", headers=basic(f"guess {n}")
            ) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert int(response.headers["Retry-After"]) >= 1
        # Ten tries, plus at most a refill or two (one per 6 s) while the wrong ones are slowed.
        assert statuses.count(401) <= 12 and statuses.count(429) >= 288
        parallel = await _form_guesses(http, review_app.url, 100)
        assert parallel.count(429) >= 99  # the address has used its tries


async def test_parallel_guesses_get_the_same_few_tries(review_app: RunningApp) -> None:
    async with aiohttp.ClientSession() as http:
        parallel = await _form_guesses(http, review_app.url, 100)
    assert parallel.count(401) <= 10 and parallel.count(429) >= 90


async def test_the_login_cookie_holds_no_password_hash_and_logout_ends_it(
    review_app: RunningApp,
) -> None:
    import hashlib

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(
            review_app.url + "/login", data={"password": PASSWORD}, allow_redirects=False
        ) as response:
            assert response.status == 302
            kept = response.headers["Set-Cookie"].split(";", 1)[0]
        payload = _session_payload(kept)
        unsalted = hashlib.sha256(b"review-login:" + PASSWORD.encode()).hexdigest()[:32]
        assert unsalted not in payload and PASSWORD not in payload
        async with http.post(review_app.url + "/logout", allow_redirects=False) as response:
            assert response.status == 302
    # The cookie kept from before the logout is worth nothing now.
    async with aiohttp.ClientSession() as http:
        async with http.get(review_app.url + "/calls", headers={"Cookie": kept}) as response:
            assert response.status == 401


async def test_a_new_password_ends_every_login_and_any_password_may_be_used(
    database_env: dict[str, str],
) -> None:
    """A non-ASCII password answered 500; a non-ASCII REVIEW_PASSWORD locked everyone out."""
    first = settings_from(database_env, REVIEW_PASSWORD="pässwörd-ÄÖÜ-€")
    await seeded(first)
    async with run_app(first) as app, aiohttp.ClientSession() as http:
        async with http.post(
            app.url + "/login", data={"password": "wröng-ü"}, allow_redirects=False
        ) as response:
            assert response.status == 401
        async with http.post(
            app.url + "/login", data={"password": "pässwörd-ÄÖÜ-€"}, allow_redirects=False
        ) as response:
            assert response.status == 302
            cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        async with http.get(app.url + "/calls", headers={"Cookie": cookie}) as response:
            assert response.status == 200
    second = settings_from(database_env, REVIEW_PASSWORD="another password")
    async with run_app(second) as app, aiohttp.ClientSession() as http:
        async with http.get(app.url + "/calls", headers={"Cookie": cookie}) as response:
            assert response.status == 401


@pytest.mark.parametrize(
    "target",
    ["/\\evil.example", "//evil.example", "https://evil.example/", "/\\/evil", "\\\\evil", "/\tx"],
)
async def test_login_redirects_only_to_a_local_path(review_app: RunningApp, target: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            review_app.url + "/login",
            data={"password": PASSWORD, "next": target},
            allow_redirects=False,
        ) as response:
            assert response.status == 302 and response.headers["Location"] == "/calls"


async def test_review_pages_are_never_cached_or_framed(review_app: RunningApp) -> None:
    async with aiohttp.ClientSession() as http:
        for path, headers in (
            ("/login", {}),
            ("/calls", {}),
            ("/api/calls", basic(PASSWORD)),
            (f"/api/calls/{ORDER_CALL}", basic(PASSWORD)),
        ):
            async with http.get(review_app.url + path, headers=headers) as response:
                assert response.headers["Cache-Control"] == "no-store", path
                assert response.headers["X-Frame-Options"] == "DENY", path


async def test_odd_dates_and_pages_are_ignored_not_a_500(review_app: RunningApp) -> None:
    odd = [
        "from=9999-12-31&to=9999-12-31",
        "from=0001-01-01",
        "to=²",
        "page=" + "9" * 40,
        "page=²",
        "page=-5",
        "from=2026-13-45",
    ]
    async with aiohttp.ClientSession(headers=basic(PASSWORD)) as http:
        for query in odd:
            async with http.get(review_app.url + "/api/calls?" + query) as response:
                assert response.status == 200, query
            async with http.get(review_app.url + "/calls?" + query) as response:
                assert response.status == 401, query  # pages need the login, not Basic


async def test_csv_cells_never_start_a_formula(
    base_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.store.calls import LogBatch

    store = await Store.open(base_settings.calllog.database)
    batch = LogBatch()
    batch.calls.append(
        (
            "CA" + "7" * 32,
            {
                "from_number": "+15551230001",
                "to_number": '=HYPERLINK("http://evil.example","click")',
                "end_reason": "@SUM(1+1)*cmd|' /C calc'!A0",
            },
        )
    )
    await store.calls.write(batch)
    await store.close()
    target = tmp_path / "out.csv"
    code, _, _ = await run_cli(
        base_settings, capsys, "export", "--format", "csv", "-o", str(target)
    )
    import csv as csv_module

    with target.open() as exported:
        [row] = list(csv_module.DictReader(exported))
    assert code == 0
    assert row["from_number"] == "+15551230001"  # a number stays a number
    assert row["to_number"].startswith("'=HYPERLINK")
    assert row["end_reason"].startswith("'@SUM")

"""The review UI in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from bot.simulator import simulate
from bot.store.store import Store
from tests.conftest import eventually, run_app, settings_from
from tests.fake_realtime import FakeRealtime
from tests.integration.test_listen import speech_at
from tests.seed import CUT_CALL, ORDER_CALL, seed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "review-password-123"


@pytest.mark.timeout(120)
async def test_review_in_a_real_browser(base_env: dict[str, str]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (scripts/test installs it with apt-get)")
    settings = settings_from(base_env, REVIEW_PASSWORD=PASSWORD)
    store = await Store.open(settings.calllog.database)
    await seed(store.calls, settings.calllog.recordings_path)
    await store.close()
    ARTIFACTS.mkdir(exist_ok=True)
    async with run_app(settings) as app, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = await browser.new_page(viewport={"width": 430, "height": 932})  # a phone
            response = await page.goto(app.url + "/calls")
            assert response is not None and response.status == 401
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page).to_have_url(app.url + "/calls")
            rows = page.locator("tbody tr")
            await expect(rows).to_have_count(2)

            await page.fill("input[name=number]", "5557770003")
            await page.click("form.filters button")
            await expect(rows).to_have_count(1)
            await expect(rows.first).to_contain_text("+15557770003")
            await page.fill("input[name=number]", "")
            await page.fill("input[name=q]", "delivery address")
            await page.click("form.filters button")
            await expect(rows).to_have_count(1)

            await rows.first.locator("a").click()
            await expect(page).to_have_url(app.url + f"/calls/{ORDER_CALL}")
            player = page.locator("audio[controls]")
            await expect(player).to_have_count(1)
            assert await player.get_attribute("src") == f"/calls/{ORDER_CALL}/recording.wav"
            heard = page.locator(".bubble .heard")
            unheard = page.locator(".bubble .unheard")
            await expect(heard).to_have_text("Of course. First I need to confirm it is you,")
            await expect(unheard).to_be_visible()
            await expect(unheard).to_contain_text("postcode on the order")
            style = await unheard.evaluate("e => getComputedStyle(e).textDecorationLine")
            assert "line-through" in style
            await expect(page.locator("[data-kind=dtmf]")).to_contain_text("pressed 5")
            await expect(page.locator("[data-kind=tool]")).to_contain_text("get_order_status")
            await expect(page.locator(".badge", has_text="810 ms")).to_be_visible()
            await page.screenshot(path=str(ARTIFACTS / "call-page.png"), full_page=True)

            await page.goto(app.url + f"/calls/{CUT_CALL}")
            await expect(page.locator(".event.error")).to_contain_text("1011")
            await page.click("header button")
            await expect(page.locator("input[name=password]")).to_be_visible()
        finally:
            await browser.close()
    assert (ARTIFACTS / "call-page.png").stat().st_size > 10_000


@pytest.mark.timeout(120)
async def test_a_live_call_page_shows_each_line_as_it_is_said(base_env: dict[str, str]) -> None:
    """A listened call, open in Chromium while it goes on: each transcribed line appears
    within 2 s of the transcription event that carried it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (scripts/test installs it with apt-get)")
    caller_words, agent_words = "My parcel never came.", "I will send a new one today."
    fake = FakeRealtime(texts_by_pitch={300: caller_words, 700: agent_words})
    call_sid = "CA" + "5" * 32
    async with fake:
        settings = settings_from(
            base_env,
            REVIEW_PASSWORD=PASSWORD,
            REALTIME_URL=fake.url,
            CALL_MODE="transcribe",
            FORWARD_TO="+15550009999",
        )
        async with run_app(settings) as app, async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = await browser.new_page()
                await page.goto(app.url + "/calls")
                await page.fill("input[name=password]", PASSWORD)
                await page.click("button[type=submit]")
                await expect(page).to_have_url(app.url + "/calls")
                call = asyncio.create_task(
                    simulate(
                        app.url,
                        auth_token=app.secret,
                        call_sid=call_sid,
                        say=speech_at(300, 2.5, 1.0, 8.0),
                        agent=speech_at(700, 4.5, 1.0, 8.0),
                        duration_s=8.0,
                    )
                )
                await eventually(lambda: len(fake.connections) == 2, what="the call starting")
                for _ in range(20):  # the call log writes the call's row within 250 ms
                    opened = await page.goto(app.url + f"/calls/{call_sid}")
                    if opened is not None and opened.status == 200:
                        break
                    await asyncio.sleep(0.1)
                await expect(page.locator("p.live")).to_contain_text("live")
                delays = []
                for speaker, words in (("caller", caller_words), ("agent", agent_words)):
                    bubble = page.locator(f"li.{speaker} .bubble")
                    await expect(bubble).to_have_text(words, timeout=15_000)
                    shown = time.monotonic()
                    transcribed = max(
                        at
                        for conn in fake.connections
                        for name, at in zip(conn.sent, conn.sent_at, strict=True)
                        if name == "conversation.item.input_audio_transcription.completed"
                        and at <= shown
                    )
                    delays.append(shown - transcribed)
                print("live view: shown " + ", ".join(f"{d * 1000:.0f} ms" for d in delays))
                assert all(delay <= 2.0 for delay in delays), delays
                await asyncio.wait_for(call, 15)
                await expect(page.locator("p.live")).to_have_text(
                    "The call has ended.", timeout=5_000
                )
                await page.screenshot(path=str(ARTIFACTS / "live-call.png"), full_page=True)
            finally:
                await browser.close()

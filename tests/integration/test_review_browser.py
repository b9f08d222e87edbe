"""The review UI in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from bot.store.store import Store
from tests.conftest import run_app, settings_from
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

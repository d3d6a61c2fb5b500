"""The demo page in headless Chromium (Debian's ``chromium``), driven by Playwright.

Type a prefix, see highlighted suggestions, move with the arrow keys, pick one with Enter,
see instant results, click Generate, watch the summary stream in with numbered sources; a
hostile suggestion and a hostile document title show as text. Skips cleanly without the
browser or Playwright; never downloads a browser.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.gen_support import settings_for, standin_server, worker_task
from tests.lexical_fixtures import ROWS, build_small_index
from tests.redis_server import RedisServer
from tests.vllm_standin import StandIn
from typeahead.http.app import create_app
from typeahead.http.demo import CSP
from typeahead.suggest.service import SuggestService

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_TITLE = "<b onmouseover=alert(2)>not bold</b>"
TOKENS = [
    "Paris ",
    "is ",
    "the ",
    "capital ",
    "and ",
    "largest ",
    "city ",
    "of ",
    "France ",
    "[1]",
    ". ",
    "The ",
    "Rhine ",
    "forms ",
    "part ",
    "of ",
    "its ",
    "border ",
    "[2]",
    ".",
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs" / "demo.png"


@dataclass(frozen=True)
class WithResults(SuggestService):
    """Adds instant results (one with a hostile title) and an informational intent, so the
    page shows everything it can (the real intent model and documents are tested elsewhere)."""

    def suggest(self, query: str, k: int) -> dict[str, Any]:
        body = super().suggest(query, k)
        body["intent"] = {"label": "informational", "confidence": 0.93}
        body["offer_generate"] = True
        body["results"] = [
            {
                "id": "paris",
                "title": "Paris",
                "score": 0.91,
                "snippet": "Paris is the capital and largest city of France.",
            },
            {"id": "x", "title": HOSTILE_TITLE, "score": 0.40, "snippet": "shown as text"},
        ]
        return body


def browser_available() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.async_api", reason="pip install playwright")


async def test_demo_page_end_to_end(redis_server: RedisServer, tmp_path: Path) -> None:
    browser_available()
    from playwright.async_api import async_playwright

    index = build_small_index(tmp_path, [*ROWS, (HOSTILE, 50)])
    service = WithResults(index=index, semantic=False)
    async with standin_server(StandIn(tokens=TOKENS, ttft_s=0.2, token_delay_s=0.08)) as url:
        settings = settings_for(redis_server.url, llm_url=url, semantic=False)
        server = TestServer(create_app(settings, service))
        await server.start_server()
        try:
            async with worker_task(settings), async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
                try:
                    page = await browser.new_page(viewport={"width": 900, "height": 760})
                    await drive(page, str(server.make_url("/")), tmp_path)
                finally:
                    await browser.close()
        finally:
            await server.close()


async def drive(page: Any, url: str, out: Path) -> None:
    problems: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: dialogs.append(d.message))

    resp = await page.goto(url)
    assert resp.status == 200 and resp.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP
    box = page.locator("#q")
    assert await box.get_attribute("role") == "combobox"

    await suggestions_and_keyboard(page, box)
    await results_and_generate(page, out)
    await hostile_suggestion(page, box)
    assert dialogs == [] and problems == [], (dialogs, problems)


async def suggestions_and_keyboard(page: Any, box: Any) -> None:
    await box.click()
    await box.press_sequentially("new", delay=60)
    options = page.locator("#suggestions [role=option]")
    await options.first.wait_for()
    assert await box.get_attribute("aria-expanded") == "true"
    texts = await options.all_text_contents()
    assert texts[0].startswith("new york times")
    assert await page.locator("#suggestion-0 mark").text_content() == "new"
    await box.press("ArrowDown")
    await box.press("ArrowDown")
    assert await box.get_attribute("aria-activedescendant") == "suggestion-1"
    assert await page.locator("#suggestion-1").get_attribute("aria-selected") == "true"
    await box.press("ArrowUp")
    assert await box.get_attribute("aria-activedescendant") == "suggestion-0"
    await box.press("Enter")
    assert await box.input_value() == "new york times"
    await page.locator("#suggestions").wait_for(state="hidden")
    assert await box.get_attribute("aria-expanded") == "false"


async def results_and_generate(page: Any, out: Path) -> None:
    results = page.locator("#results li")
    await results.first.wait_for()
    assert await results.count() == 2
    assert HOSTILE_TITLE in await results.nth(1).text_content()
    assert await page.locator("#results b").count() == 0
    button = page.locator("#generate")
    await button.wait_for()
    await button.click()
    summary = page.locator("#summary")
    # Streaming: part of the text shows before the sources (sent with "done") arrive.
    # (Polled from here: the page's CSP rightly forbids the eval that wait_for_function uses.)
    partial = await poll(summary.text_content, lambda text: bool(text))
    assert partial and len(partial) < len("".join(TOKENS).strip())
    assert await page.locator("#sources li").count() == 0
    await page.locator("#sources li").first.wait_for()
    assert await summary.text_content() == "".join(TOKENS).strip()
    sources = await page.locator("#sources li").all_text_contents()
    assert sources[0].startswith("[1]") and sources[1].startswith("[2]")
    assert "Paris" in sources[0]
    shot = out / "demo.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # The README's picture is refreshed on request only: a test must not edit tracked files.
    if os.environ.get("TYPEAHEAD_UPDATE_DEMO_PNG"):
        shutil.copyfile(shot, DOCS_SHOT)


async def poll(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool],
               timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if done(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.02)


async def hostile_suggestion(page: Any, box: Any) -> None:
    await box.fill("")
    await box.press_sequentially("<img", delay=40)
    option = page.locator("#suggestions [role=option]").first
    await option.wait_for()
    assert HOSTILE in await poll(option.text_content, lambda text: "onerror" in (text or ""))
    assert await page.locator("#suggestions img").count() == 0
    assert await page.locator("img").count() == 0

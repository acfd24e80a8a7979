"""The browser player in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server

pytestmark = pytest.mark.model

CHROMIUM = Path("/usr/bin/chromium")
MAX_RTF_FOR_GAPLESS = 0.8
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "player.png"
ARGS = [
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PARAGRAPH = (
    "The old lighthouse keeper climbed the stairs every evening at dusk. He cleaned the great "
    "lens, trimmed the wick, and watched the ships pass far out at sea."
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "make test installs Debian's chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def page(settings: Settings, synthesizer: Synthesizer, browser: Browser) -> Iterator[Page]:
    with live_server(settings, synthesizer) as base:
        opened = browser.new_page(viewport={"width": 1100, "height": 800})
        try:
            opened.goto(base + "/")
            opened.wait_for_function("window.ttsReady === true", timeout=30_000)
            yield opened
        finally:
            opened.close()


def state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.ttsState")
    return result


def test_the_page_plays_a_paragraph_completely(page: Page) -> None:
    page.fill("#text", PARAGRAPH)
    page.click("#speak")
    page.wait_for_function(
        "window.ttsState.doneReason !== null"
        " && window.ttsState.samplesPlayed >= 0.95 * window.ttsState.samplesReceived",
        timeout=120_000,
    )
    heard = state(page)
    assert heard["doneReason"] == "complete"
    assert heard["seqs"] == list(range(len(heard["seqs"]))), "every frame, in order"
    assert heard["doneSamples"] == heard["samplesReceived"]
    assert heard["samplesPlayed"] >= 0.95 * heard["samplesReceived"]
    assert heard["ttfaMs"] > 0
    print(
        f"adaptive start hold {heard['startHoldMs']} ms, TTFA {heard['ttfaMs']} ms, "
        f"stream RTF {heard['doneRtf']}, underruns after start {heard['underruns']}"
    )
    assert heard["startHoldMs"] is not None
    # Word highlighting: every word was timed, and the words highlighted while playing are in
    # reading order and nearly all of them (the page redraws every 100 ms: a word shorter than
    # that can pass between two redraws).
    timed, highlighted = heard["wordsTimed"], heard["wordsHighlighted"]
    assert timed == len(PARAGRAPH.split())
    print(f"{len(highlighted)} of {timed} words highlighted as heard")
    assert highlighted == sorted(set(highlighted)), "words light up in reading order"
    assert len(highlighted) >= 0.8 * timed, f"{len(highlighted)} of {timed} words highlighted"
    # Browser and server share this machine's cores. When something else loads them so much that
    # the stream was generated at worse than 0.8x real time, no player can keep its buffer: the
    # figures above are the report. Otherwise (the usual 0.5-0.7 here) nothing may run dry.
    if heard["doneRtf"] <= MAX_RTF_FOR_GAPLESS:
        assert heard["underruns"] == 0, "the ring buffer never ran dry after playback started"
    page.screenshot(path=str(SCREENSHOT))  # the README shows the page as this test left it


def test_the_player_plays_on_every_loopback_name(
    settings: Settings, synthesizer: Synthesizer, browser: Browser
) -> None:
    """The server answers to the loopback names (its Host check refuses other names): the
    page, its socket and a sentence on localhost, 127.0.0.1 and [::1], each over its own
    loopback."""
    with live_server(settings, synthesizer, host="::") as base:
        port = base.rsplit(":", 1)[1]
        for name in ("localhost", "127.0.0.1", "[::1]"):
            page = browser.new_page()
            try:
                page.goto(f"http://{name}:{port}/")
                page.wait_for_function("window.ttsReady === true", timeout=30_000)
                page.fill("#text", "Hello there.")
                page.click("#speak")
                page.wait_for_function(
                    "window.ttsState.doneReason !== null && window.ttsState.samplesPlayed > 0"
                    " && window.ttsState.samplesPlayed >= 0.95 * window.ttsState.samplesReceived",
                    timeout=60_000,
                )
                heard = state(page)
            finally:
                page.close()
            assert heard["doneReason"] == "complete", name
            assert heard["seqs"] == list(range(len(heard["seqs"]))), name


def test_live_typing_that_pauses_too_long_is_spoken_then_stopped(
    settings: Settings, synthesizer: Synthesizer, browser: Browser
) -> None:
    quick = dataclasses.replace(settings, stream_idle_s=1.0)
    with live_server(quick, synthesizer) as base:
        page = browser.new_page()
        try:
            page.goto(base + "/")
            page.wait_for_function("window.ttsReady === true", timeout=30_000)
            page.check("#live")
            page.wait_for_function("window.ttsState.state !== 'idle'", timeout=10_000)
            page.type("#text", "Hello there ")
            page.wait_for_function("window.ttsState.doneReason !== null", timeout=30_000)
            page.wait_for_function("window.ttsState.state === 'done'", timeout=30_000)
            heard = state(page)
            message = page.text_content("#message") or ""
            live = page.is_checked("#live")
        finally:
            page.close()
    assert heard["doneReason"] == "timeout"
    assert heard["samplesReceived"] > 0 and heard["doneSamples"] == heard["samplesReceived"]
    assert "live typing stopped after 1 s" in message and not live


def test_stop_ends_the_stream_as_cancelled(page: Page) -> None:
    page.fill("#text", " ".join([PARAGRAPH] * 3))
    page.click("#speak")
    page.wait_for_function("window.ttsState.started === true", timeout=60_000)
    page.click("#stop")
    page.wait_for_function("window.ttsState.doneReason !== null", timeout=30_000)
    stopped = state(page)
    assert stopped["doneReason"] == "cancelled"
    assert stopped["samplesReceived"] <= stopped["doneSamples"]
    assert stopped["seqs"] == list(range(len(stopped["seqs"])))
    page.wait_for_function("window.ttsState.bufferedMs === 0", timeout=10_000)
    played = state(page)["samplesPlayed"]
    page.wait_for_timeout(300)  # the worklet reports every 100 ms: three reports later...
    assert state(page)["samplesPlayed"] == played, "...nothing more was played"


def test_a_server_with_an_api_key_asks_for_it_and_plays_once_given(
    settings: Settings, synthesizer: Synthesizer, browser: Browser
) -> None:
    key = "browser-key-9c4d"
    locked = dataclasses.replace(settings, api_key=key)
    with live_server(locked, synthesizer) as base:
        page = browser.new_page()
        try:
            page.goto(base + "/")
            page.wait_for_function(
                "document.getElementById('message').textContent.includes('API key')",
                timeout=30_000,
            )
            assert page.evaluate("window.ttsReady") is not True, "no voices without the key"
            page.fill("#api-key", key)
            page.dispatch_event("#api-key", "change")
            page.wait_for_function("window.ttsReady === true", timeout=30_000)
            page.fill("#text", "The key opened the door.")
            page.click("#speak")
            page.wait_for_function("window.ttsState.doneReason !== null", timeout=120_000)
            assert state(page)["doneReason"] == "complete"
        finally:
            page.close()

"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright.

Loads the page from a running server with the shipped model, opens the bundled example, drags a
region on the waveform, separates, checks that the player holds a playable result of the song's
length, switches A/B at the same position, moves the slider, and takes a screenshot (written to
``docs/web.png`` when ``AQSEP_UPDATE_SCREENSHOT=1``).

`bash scripts/test.sh` installs what it needs (the `chromium` package and the Python
`playwright` package); Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'aqsep[web]'")
uvicorn = pytest.importorskip("uvicorn", reason="the web extra is not installed")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (the test extra)"
)

from aqsep import Separator  # noqa: E402
from aqsep.web import create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine (scripts/install.sh installs Debian's chromium when run "
    "as root with apt-get)",
)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with the shipped model, served by uvicorn on a free port of 127.0.0.1."""
    app = create_app(Separator(device="cpu"), temp_root=tmp_path_factory.mktemp("web"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_until(page, script: str, timeout: float = 60.0) -> object:  # noqa: ANN001
    """Poll ``script`` (a function, evaluated in the page) until it returns something truthy.

    (Playwright's ``wait_for_function`` evaluates strings with ``eval``, which the page's
    Content-Security-Policy forbids; ``evaluate`` is not affected.)
    """
    end = time.monotonic() + timeout
    while True:
        value = page.evaluate(script)
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {script}")
        time.sleep(0.05)


PLAYER = "document.getElementById('player')"


def test_the_page_separates_the_bundled_example_in_chromium(
    server_url: str, tmp_path: Path
) -> None:
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"console: {msg.text}") if msg.type == "error" else None
                ),
            )
            page.goto(server_url + "/")
            wait_until(page, "() => document.getElementById('query-a').options.length > 0")

            page.click("#example")
            wait_until(
                page, f"() => {PLAYER}.dataset.source === 'mixture' && {PLAYER}.readyState >= 1"
            )
            assert "8.00 s" in page.text_content("#song-name")

            # drag over the last three seconds of the waveform (5-8 s of the 8 s example)
            box = page.locator("#wave").bounding_box()
            assert box is not None
            y = box["y"] + box["height"] / 3
            page.mouse.move(box["x"] + box["width"] * 5 / 8, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.8, y + 5, steps=5)
            page.mouse.move(box["x"] + box["width"] - 1, y + 10, steps=5)
            page.mouse.up()
            start = float(page.input_value("#region-start"))
            end = float(page.input_value("#region-end"))
            assert abs(start - 5.0) < 0.05 and abs(end - 8.0) < 0.05, (start, end)
            assert page.input_value("#query-a") == "range"

            page.select_option("#query-b", "class:drums")  # the slider goes towards drums
            page.click("#separate")
            first = wait_until(page, f"() => {PLAYER}.dataset.result")
            wait_until(page, f"() => {PLAYER}.readyState >= 1")
            assert page.text_content("#error") == ""
            assert page.text_content("#progress-text").startswith("done")
            player = page.evaluate(
                f"() => ({{duration: {PLAYER}.duration, error: {PLAYER}.error, "
                f"source: {PLAYER}.dataset.source, wav: {PLAYER}.canPlayType('audio/wav')}})"
            )
            assert player["source"] == "target" and player["error"] is None
            assert abs(player["duration"] - 8.0) < 0.01, player  # the estimate is the song's length
            assert player["wav"] in ("maybe", "probably")

            # it plays: time moves on
            page.evaluate(f"() => {PLAYER}.play()")
            wait_until(page, f"() => {PLAYER}.currentTime > 0.2", timeout=20)
            page.evaluate(f"() => {PLAYER}.pause()")

            # A/B: the rest starts where the estimate was
            page.evaluate(f"() => {{ {PLAYER}.currentTime = 3.0; }}")
            page.click(".ab button[data-source=rest]")
            wait_until(
                page, f"() => {PLAYER}.dataset.source === 'rest' && {PLAYER}.readyState >= 1"
            )
            assert abs(page.evaluate(f"() => {PLAYER}.currentTime") - 3.0) < 0.05
            page.click(".ab button[data-source=target]")
            wait_until(page, f"() => {PLAYER}.dataset.source === 'target'")

            # the slider: one step towards drums, heard at once (computed ahead)
            page.focus("#blend")
            page.keyboard.press("ArrowRight")
            moved = wait_until(
                page, f"() => {PLAYER}.dataset.result !== '{first}' && {PLAYER}.dataset.result"
            )
            assert moved != first
            assert page.text_content("#blend-value") == "0.25"
            assert abs(page.evaluate(f"() => {PLAYER}.duration") - 8.0) < 0.01
            assert page.text_content("#error") == ""

            shot = tmp_path / "web.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("AQSEP_UPDATE_SCREENSHOT") == "1":
                shutil.copyfile(shot, REPO / "docs" / "web.png")
        finally:
            browser.close()
    assert problems == []

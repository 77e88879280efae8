"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright.

Loads the page from a running server with the shipped model, opens the bundled example, drags a
region on the waveform, separates, checks that the player holds a playable result of the song's
length, switches A/B at the same position, moves the slider, separates every stem into the mixer,
zooms, and takes a screenshot (written to ``docs/web.png`` when ``AQSEP_UPDATE_SCREENSHOT=1``, as
the phone test writes ``docs/web-phone.png``). Then what a musician relies on, one test each:
stale views, the keyboard, errors in sight, a phone, download names, drag and drop, every stem
in one job summing to the song (its mixer and zip), zoom and the region's handles, a query clip
in a loop, and the history of results.

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
from aqsep.web.headless import CHROMIUM_ARGS, find_chromium  # noqa: E402

REPO = Path(__file__).resolve().parents[2]  # tests/web/ -> the repository

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine (scripts/install.sh installs Debian's chromium when run "
    "as root with apt-get)",
)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with the bundled fast model, served by uvicorn on a free port of 127.0.0.1."""
    app = create_app(Separator("fast", device="cpu"), temp_root=tmp_path_factory.mktemp("web"))
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

            # every stem, in the mixer, with the region's view zoomed in
            page.select_option("#query-b", "")
            page.select_option("#query-a", "stems")
            page.click("#separate")
            wait_until(page, "() => !document.getElementById('mixer').hidden")
            page.click("#stems li[data-stem=vocals] button.solo")
            page.click("#zoom-in")
            wait_until(page, "() => state.detail && state.detail.view === state.view")
            assert page.locator("#history li").count() == 2  # the slider's pair, every stem

            shot = tmp_path / "web.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("AQSEP_UPDATE_SCREENSHOT") == "1":
                shutil.copyfile(shot, REPO / "docs" / "web.png")
        finally:
            browser.close()
    assert problems == []


# ---- what a musician relies on ------------------------------------------------------------

EXAMPLE = REPO / "aqsep" / "examples" / "mixture.wav"


@pytest.fixture()
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, server_url: str, width: int = 1366, height: int = 800):  # noqa: ANN001, ANN201
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server_url + "/")
    wait_until(page, "() => document.getElementById('query-a').options.length > 0")
    return page


def open_example(page) -> None:  # noqa: ANN001
    page.click("#example")
    wait_until(
        page,
        f"() => {PLAYER}.dataset.source === 'mixture' && {PLAYER}.readyState >= 1 "
        "&& !document.getElementById('separate').disabled",
    )


def in_viewport(page, selector: str) -> bool:  # noqa: ANN001
    return page.evaluate(
        f"""() => {{ const b = document.querySelector('{selector}').getBoundingClientRect();
        return b.height > 0 && b.top >= -1 && b.bottom <= window.innerHeight + 1; }}"""
    )


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    sf.write(out, 0.1 * rng.standard_normal((int(44100 * seconds), 2)), 44100, format="WAV")
    return out.getvalue()


SAME_REQUEST = """async () => {
  const post = await fetch('/api/jobs', {method: 'POST',
    headers: {'X-Session': state.session, 'Content-Type': 'application/json'},
    body: JSON.stringify({song: state.song.id, query: {kind: 'class', name: 'vocals'},
      other: {kind: 'class', name: 'drums'},
      alpha: parseFloat(document.getElementById('blend').value), refine: 0})});
  let job = await post.json();
  while (job.state === 'queued' || job.state === 'running') {
    await new Promise((r) => setTimeout(r, 100));
    job = await (await fetch('/api/jobs/' + job.id, {headers: {'X-Session': state.session}})).json();
  }
  return job.result.id;
}"""


def test_rapid_slider_moves_end_on_the_stop_shown_and_played_from_memory(
    server_url: str, browser
) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    page.select_option("#query-a", "class:vocals")
    page.select_option("#query-b", "class:drums")
    page.click("#separate")
    first = wait_until(page, f"() => {PLAYER}.dataset.result")
    time.sleep(3.0)  # the other stops are computed ahead meanwhile
    audio_fetches: list[str] = []
    page.on(
        "request",
        lambda r: (
            audio_fetches.append(r.url)
            if "/api/results/" in r.url and r.url.endswith(("/target", "/rest"))
            else None
        ),
    )
    for _ in range(3):  # quick moves, one after another
        page.focus("#blend")
        page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    expected = page.evaluate(SAME_REQUEST)  # the stop the slider ends on (0.50)
    assert page.input_value("#blend") == "0.5"
    wait_until(page, f"() => {PLAYER}.dataset.result === '{expected}'", timeout=60)
    time.sleep(1.0)  # anything still in flight would land now
    shown = page.evaluate("() => document.getElementById('wave').dataset.shown")
    assert page.evaluate(f"() => {PLAYER}.dataset.result") == expected
    assert shown == f"{expected}/target"
    assert page.evaluate(f"() => {PLAYER}.src === state.urls.target")
    assert page.text_content("#error") == ""

    # back to stops already heard (0 and 0.5): no audio fetched again, and the response timed
    fetched = len(audio_fetches)
    timings = []
    moves = (
        ("() => document.getElementById('blend').focus()", "Home", first),
        (
            "() => { const b = document.getElementById('blend'); b.value = '0.5'; "
            "b.dispatchEvent(new Event('change')); }",
            None,
            expected,
        ),
    )
    for script, key, stop in moves:
        start = time.monotonic()
        page.evaluate(script)
        if key:
            page.keyboard.press(key)
        wait_until(
            page,
            f"() => {PLAYER}.dataset.result === '{stop}' && "
            f"document.getElementById('wave').dataset.shown === '{stop}/target'",
            timeout=30,
        )
        timings.append(time.monotonic() - start)
    assert len(audio_fetches) == fetched, audio_fetches[fetched:]
    print(f"slider move to a stop heard before: {max(timings) * 1000:.0f} ms")


def test_a_new_song_clears_the_views_until_it_is_drawn_and_a_failed_one_says_so(
    server_url: str, browser, tmp_path: Path
) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    held: list = []
    page.route("**/api/song/*/overview*", lambda route: held.append(route))
    song = tmp_path / "second song.wav"
    song.write_bytes(wav_bytes(4.0))
    page.set_input_files("#song-file", str(song))
    wait_until(page, "() => document.getElementById('song-name').textContent.includes('second')")
    while not held:
        page.wait_for_timeout(50)
    state = page.evaluate(
        f"""() => ({{separate: document.getElementById('separate').disabled,
        shown: document.getElementById('wave').dataset.shown,
        busy: document.getElementById('views').getAttribute('aria-busy'),
        src: {PLAYER}.getAttribute('src'), name: document.getElementById('song-name').textContent}})"""
    )
    assert state["separate"] is True and state["shown"] == "" and state["busy"] == "true", state
    assert state["src"] is None, state  # the previous song is not playable meanwhile
    held[0].continue_()
    page.unroute("**/api/song/*/overview*")
    wait_until(page, "() => !document.getElementById('separate').disabled")
    assert page.evaluate("() => document.getElementById('wave').dataset.shown") == "song"
    assert "4.00 s" in page.text_content("#song-name")

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"this is not audio at all " * 50)
    page.set_input_files("#song-file", str(bad))
    wait_until(page, "() => document.getElementById('song-error').textContent")
    assert "not an audio file" in page.text_content("#song-error")
    assert in_viewport(page, "#song-error")
    wait_until(page, "() => !document.getElementById('separate').disabled")
    assert "second song.wav: 4.00 s" in page.text_content("#song-name")  # the song still open


def test_the_song_is_opened_and_separated_with_the_keyboard_alone(server_url: str, browser) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    # file choosers are caught (not shown) from now on: set up before any key is pressed
    page.on("filechooser", lambda chooser: None)
    page.wait_for_timeout(200)

    def tab_to(element_id: str) -> None:
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.id") == element_id:
                return
        raise AssertionError(f"Tab never reaches #{element_id}")

    tab_to("song-open")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(EXAMPLE))
    wait_until(page, "() => !document.getElementById('separate').disabled")
    tab_to("clip-open")
    with page.expect_file_chooser() as clips:
        page.keyboard.press("Enter")
    assert clips.value.is_multiple()
    clips.value.set_files([])
    tab_to("separate")
    page.keyboard.press("Enter")
    wait_until(page, f"() => {PLAYER}.dataset.result")
    names = page.evaluate(
        "() => Array.from(document.querySelectorAll('[data-download]'), (a) => a.getAttribute('aria-label'))"
    )
    assert len(set(names)) == 6 and all(n and n.startswith("Download the ") for n in names), names
    assert page.get_attribute("#progress", "aria-label")
    assert page.get_attribute("#progress-text", "aria-live") == "polite"


def test_inputs_that_disagree_are_refused_next_to_them(
    server_url: str, browser, tmp_path: Path
) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    page.fill("#region-start", "6")
    page.press("#region-start", "Enter")
    assert page.input_value("#region-end") == "8.00"  # an open end is the song's end
    assert page.input_value("#query-a") == "range"
    page.fill("#region-end", "2")
    page.press("#region-end", "Enter")
    assert "must end after it starts" in page.text_content("#error")
    assert in_viewport(page, "#error")
    assert (page.input_value("#region-start"), page.input_value("#region-end")) == ("6.00", "8.00")
    page.fill("#region-end", "9")
    page.press("#region-end", "Enter")
    assert "ends at 8.00 s" in page.text_content("#error")
    assert page.input_value("#region-end") == "8.00"

    page.fill("#refine", "1.5")
    page.click("#separate")
    assert "whole number" in page.text_content("#error")
    assert page.evaluate(f"() => {PLAYER}.dataset.result") == ""  # nothing was run
    page.fill("#refine", "0")

    files = []
    for i in range(9):
        clip = tmp_path / f"clip{i}.wav"
        clip.write_bytes(wav_bytes(0.5, seed=i))
        files.append(str(clip))
    page.set_input_files("#clip-files", files)
    wait_until(page, "() => document.getElementById('error').textContent", timeout=60)
    assert "at most 8 query clips" in page.text_content("#error")
    assert page.locator("#clips li").count() == 8
    labels = page.evaluate(
        "() => Array.from(document.getElementById('query-a').options, (o) => o.textContent)"
    )
    assert any(label.endswith("(8)") for label in labels), labels


def test_the_page_fits_a_phone(server_url: str, browser, tmp_path: Path) -> None:  # noqa: ANN001
    page = open_page(browser, server_url, 390, 844)
    open_example(page)
    page.select_option("#query-a", "stems")
    page.click("#separate")
    wait_until(page, "() => !document.getElementById('mixer').hidden")
    page.click("#zoom-in")
    page.select_option("#query-b", "class:drums")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width
    small = page.evaluate(
        """() => Array.from(document.querySelectorAll('button, select, input[type=number]'))
        .filter((e) => e.offsetParent && e.getBoundingClientRect().height < 40)
        .map((e) => e.id || e.textContent)"""
    )
    assert small == [], small
    shot = tmp_path / "web-phone.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("AQSEP_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "web-phone.png")


def test_downloads_are_named_by_the_query_that_made_them(server_url: str, browser) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    names = []
    for query in ("class:vocals", "class:drums"):
        page.select_option("#query-a", query)
        before = page.evaluate(f"() => {PLAYER}.dataset.result")
        page.click("#separate")
        wait_until(page, f"() => {PLAYER}.dataset.result && {PLAYER}.dataset.result !== '{before}'")
        for link in (
            "[data-download=target][data-format=flac]",
            "[data-download=rest][data-format=wav]",
        ):
            with page.expect_download() as download:
                page.click(link)
            names.append(download.value.suggested_filename)
    page.select_option("#query-b", "class:drums")
    page.select_option("#query-a", "class:vocals")
    page.fill("#refine", "1")
    before = page.evaluate(f"() => {PLAYER}.dataset.result")
    page.click("#separate")
    wait_until(page, f"() => {PLAYER}.dataset.result && {PLAYER}.dataset.result !== '{before}'")
    with page.expect_download() as download:
        page.click("[data-download=target][data-format=wav]")
    names.append(download.value.suggested_filename)
    assert names == [
        "mixture-vocals-estimate.flac",
        "mixture-vocals-rest.wav",
        "mixture-drums-estimate.flac",
        "mixture-drums-rest.wav",
        "mixture-vocals-to-drums-0.00-refine1-estimate.wav",
    ], names


DROP = """([selector, files]) => {
  const data = new DataTransfer();
  for (const [name, b64] of files) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    data.items.add(new File([bytes], name, {type: 'audio/wav'}));
  }
  const target = document.querySelector(selector);
  target.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
  target.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
}"""


def test_songs_and_query_clips_are_dropped_on_the_page(server_url: str, browser) -> None:  # noqa: ANN001
    import base64

    page = open_page(browser, server_url)
    song = base64.b64encode(wav_bytes(3.0)).decode()
    page.evaluate(DROP, ["#wave", [["dropped song.wav", song]]])
    wait_until(page, "() => !document.getElementById('separate').disabled")
    assert page.text_content("#song-name").startswith("dropped song.wav: 3.00 s")
    clips = [[f"hit{i}.wav", base64.b64encode(wav_bytes(0.5, seed=i)).decode()] for i in range(2)]
    page.evaluate(DROP, ["#refine", clips])  # anywhere on the query panel
    wait_until(page, "() => document.querySelectorAll('#clips li').length === 2")
    assert page.input_value("#query-a") == "clips"
    assert page.text_content("#song-name").startswith("dropped song.wav")  # still the song
    page.evaluate(DROP, ["header", clips])
    assert "one song at a time" in page.text_content("#song-error")


def test_the_class_menu_groups_whole_stems_first_with_words_for_each(
    server_url: str, browser
) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    groups = page.evaluate(
        """() => Array.from(document.querySelectorAll('#query-a optgroup'), (g) =>
        [g.label, Array.from(g.querySelectorAll('option'), (o) => [o.value, o.textContent])])"""
    )
    assert groups[0][0] == "Whole stems"
    assert [v for v, _ in groups[0][1]] == [
        "stems",  # every stem at once
        "class:vocals",
        "class:drums",
        "class:bass",
        "class:other",
        "class:accompaniment",
    ]
    classes = page.evaluate("() => state.config.classes")
    listed = [v for _, options in groups for v, _ in options if v != "stems"]
    assert sorted(listed) == sorted(f"class:{c}" for c in classes)  # each class once
    assert all(": " in label for _, options in groups for _, label in options)  # described


def test_the_waveform_and_the_player_share_one_screen(server_url: str, browser) -> None:  # noqa: ANN001
    page = open_page(browser, server_url, 1366, 800)
    open_example(page)
    page.click("#separate")
    wait_until(page, f"() => {PLAYER}.dataset.result")
    page.evaluate("() => window.scrollTo(0, 0)")
    for selector in ("#wave", "#player", ".ab", ".downloads"):
        assert in_viewport(page, selector), selector


def test_the_region_loops_before_separating(server_url: str, browser) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    assert page.is_disabled("#loop-region")  # no region yet
    page.fill("#region-start", "1")
    page.press("#region-start", "Enter")
    page.fill("#region-end", "1.6")
    page.press("#region-end", "Enter")
    assert page.input_value("#query-a") == "range"
    assert page.evaluate("() => [state.region.start, state.region.end]") == [1, 1.6]
    page.click("#loop-region")
    wait_until(page, f"() => !{PLAYER}.paused && {PLAYER}.currentTime > 1.0", timeout=20)
    seen = []
    end = time.monotonic() + 2.0  # more than three turns of the 0.6 s loop
    while time.monotonic() < end:
        seen.append(page.evaluate(f"() => {PLAYER}.currentTime"))
        time.sleep(0.05)
    state = page.evaluate("() => [state.region, state.looping]")
    assert min(seen) >= 0.95 and max(seen) <= 1.9, (min(seen), max(seen), state)
    assert page.get_attribute("#loop-region", "aria-pressed") == "true"
    page.click("#loop-region")
    assert page.evaluate(f"() => {PLAYER}.paused")


# ---- every stem, zoom, clips, history ----------------------------------------------------

STEM_SUM = """async () => {
  const answer = await fetch('/api/song/' + state.song.id + '/audio', {headers: {'X-Session': state.session}});
  const mix = await mixer.ctx.decodeAudioData(await answer.arrayBuffer());
  let worst = 0;
  const levels = [];
  for (let c = 0; c < mix.numberOfChannels; c++) {
    const m = mix.getChannelData(c);
    const stems = mixer.buffers.map((b) => b.getChannelData(c));
    for (const s of stems) levels.push(Math.sqrt(s.reduce((a, v) => a + v * v, 0) / s.length));
    for (let i = 0; i < m.length; i++) {
      let total = 0;
      for (const s of stems) total += s[i];
      worst = Math.max(worst, Math.abs(total - m[i]));
    }
  }
  return {worst, levels, lengths: mixer.buffers.map((b) => b.length), mix: mix.length,
    rate: mixer.ctx.sampleRate};
}"""
GAINS = "() => mixer.gains.map((g) => g.gain.value)"


def test_every_stem_in_one_job_sums_to_the_song_in_a_mixer_and_a_zip(
    server_url: str, browser, tmp_path: Path
) -> None:  # noqa: ANN001
    import zipfile

    import soundfile as sf

    page = open_page(browser, server_url)
    open_example(page)
    posts: list[str] = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.url) if r.method == "POST" and r.url.endswith("/api/jobs") else None
        ),
    )
    page.select_option("#query-a", "stems")
    page.click("#separate")
    wait_until(page, "() => !document.getElementById('mixer').hidden")
    stems = page.evaluate("() => state.config.stems")
    assert len(posts) == 1  # one job for every stem
    names = page.evaluate(
        "() => Array.from(document.querySelectorAll('#stems li'), (li) => li.dataset.stem)"
    )
    assert names == stems == ["bass", "drums", "other", "vocals"], names
    checked = page.evaluate(STEM_SUM)
    assert checked["lengths"] == [checked["mix"]] * 4 and checked["mix"] == 8 * 22050, checked
    assert checked["rate"] == 22050  # decoded at the song's rate: the files' own samples
    assert checked["worst"] < 4.5 / 32768, checked  # the stems sum to the song (16-bit each)
    assert min(checked["levels"]) > 1e-4, checked
    assert page.is_disabled(".ab button[data-source=target]")  # no single estimate here

    # solo, mute and volume set each stem's gain
    assert page.evaluate(GAINS) == [1, 1, 1, 1]
    page.click("#stems li[data-stem=vocals] button.solo")
    assert page.evaluate(GAINS) == [0, 0, 0, 1]
    page.click("#stems li[data-stem=drums] button.solo")
    page.click("#stems li[data-stem=vocals] button.mute")
    assert page.evaluate(GAINS) == [0, 1, 0, 0]
    page.click("#stems li[data-stem=vocals] button.solo")
    page.click("#stems li[data-stem=drums] button.solo")
    page.click("#stems li[data-stem=vocals] button.mute")
    page.evaluate(
        """() => { const v = document.querySelector('#stems li[data-stem=bass] input');
        v.value = '0.5'; v.dispatchEvent(new Event('input')); }"""
    )
    assert page.evaluate(GAINS) == [0.5, 1, 1, 1]

    # the stems play together on the audio clock
    page.click("#mixer-play")
    wait_until(page, "() => mixer.playing && mixerPosition() > 0.3", timeout=20)
    assert page.evaluate("() => mixer.sources.length") == 4
    assert page.evaluate("() => mixer.ctx.state") == "running"
    page.click("#mixer-play")
    assert page.evaluate("() => mixer.playing") is False

    with page.expect_download() as download:
        page.click("[data-zip=wav]")
    assert download.value.suggested_filename == "mixture-stems.zip"
    saved = tmp_path / "stems.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        assert archive.namelist() == [f"mixture-{n}.wav" for n in stems]
        for name in archive.namelist():
            with archive.open(name) as member:
                info = sf.info(member)
            assert (info.samplerate, info.frames) == (22050, 8 * 22050), name
    with page.expect_download() as download:
        page.click("#stems li[data-stem=drums] a[data-format=flac]")
    assert download.value.suggested_filename == "mixture-drums.flac"
    assert page.text_content("#player-error") == ""


def drag(page, x0: float, x1: float, y: float) -> None:  # noqa: ANN001
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, y, steps=4)
    page.mouse.move(x1, y, steps=4)
    page.mouse.up()


def test_zoom_scroll_and_region_handles_on_the_waveform(server_url: str, browser) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    wave = "document.getElementById('wave')"
    assert page.is_disabled("#zoom-out") and not page.is_disabled("#zoom-in")
    page.click("#zoom-in")
    page.click("#zoom-in")
    assert page.evaluate(f"() => {wave}.dataset.view") == "3.000-5.000"  # 2 s around the middle
    detail = wait_until(
        page, "() => state.detail && state.detail.view === state.view && state.detail.overview"
    )
    assert abs(detail["start"] - 3.0) < 0.01 and abs(detail["end"] - 5.0) < 0.01
    whole = page.evaluate("() => state.shown.spectrogram.top_db")
    assert detail["spectrogram"]["top_db"] == whole  # the whole song's colours

    # a region typed, then its end handle dragged 40 px: 40 px of a 2 s view
    page.fill("#region-start", "3.5")
    page.press("#region-start", "Enter")
    page.fill("#region-end", "4.5")
    page.press("#region-end", "Enter")
    box = page.locator("#wave").bounding_box()
    assert box is not None
    per_second = box["width"] / 2.0
    y = box["y"] + box["height"] / 2
    end_x = box["x"] + (4.5 - 3.0) * per_second
    drag(page, end_x, end_x + 40, y)
    region = page.evaluate("() => [state.region.start, state.region.end]")
    assert region[0] == 3.5 and abs(region[1] - (4.5 + 40 / per_second)) < 0.01, region
    start_x = box["x"] + (3.5 - 3.0) * per_second
    drag(page, start_x, start_x - 20, y)
    region = page.evaluate("() => [state.region.start, state.region.end]")
    assert abs(region[0] - (3.5 - 20 / per_second)) < 0.01, region
    assert abs(float(page.input_value("#region-start")) - region[0]) < 0.006
    assert page.input_value("#query-a") == "range"

    # scrolled to the end, Ctrl + wheel zooms around the pointer, then the whole song again
    page.evaluate(
        """() => { const s = document.getElementById('scroll');
        s.value = '1'; s.dispatchEvent(new Event('input')); }"""
    )
    assert page.evaluate(f"() => {wave}.dataset.view") == "6.000-8.000"
    page.mouse.move(box["x"] + box["width"] / 2, y)  # 7 s
    page.keyboard.down("Control")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    view = page.evaluate("() => [state.view.start, state.view.end]")
    assert abs(view[1] - view[0] - 1.6) < 1e-6 and abs((view[0] + view[1]) / 2 - 7.0) < 1e-6
    page.click("#zoom-all")
    assert page.evaluate(f"() => {wave}.dataset.view") == ""
    assert page.is_disabled("#zoom-out")
    assert page.text_content("#song-error") == ""


def test_a_query_clip_plays_in_a_loop_before_separating(
    server_url: str, browser, tmp_path: Path
) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    clip = tmp_path / "hit.wav"
    clip.write_bytes(wav_bytes(0.4, seed=3))
    page.set_input_files("#clip-files", str(clip))
    wait_until(page, "() => document.querySelectorAll('#clips li').length === 1")
    page.click("#clips .play-clip")
    wait_until(
        page, "() => !state.clipAudio.paused && state.clipAudio.currentTime > 0.1", timeout=20
    )
    assert page.evaluate("() => state.clipAudio.loop") is True
    assert page.evaluate("() => Math.abs(state.clipAudio.duration - 0.4)") < 0.01
    assert page.get_attribute("#clips .play-clip", "aria-pressed") == "true"
    time.sleep(1.0)  # more than two turns of the clip: it loops rather than ends
    assert page.evaluate("() => !state.clipAudio.paused && !state.clipAudio.ended")
    page.click("#clips .play-clip")
    assert page.evaluate("() => state.clipAudio.paused")
    assert page.get_attribute("#clips .play-clip", "aria-pressed") == "false"
    assert page.text_content("#error") == ""


def test_the_history_goes_back_to_an_earlier_result(server_url: str, browser) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    results = []
    for query in ("class:vocals", "class:drums", "stems"):
        page.select_option("#query-a", query)
        count = len(results)
        page.click("#separate")
        results.append(
            wait_until(
                page,
                f"() => state.history.length === {count + 1} && state.result "
                f"&& state.result.id === state.history[{count}].result.id && state.result.id",
            )
        )
    labels = page.evaluate(
        "() => Array.from(document.querySelectorAll('#history button'), (b) => b.textContent)"
    )
    assert labels == ["1. vocals", "2. drums", "3. every stem"], labels
    assert not page.is_hidden("#mixer")

    page.click("#history button[data-result='" + results[0] + "']")
    wait_until(
        page,
        f"() => {PLAYER}.dataset.result === '{results[0]}' && {PLAYER}.dataset.source === 'target'",
    )
    assert page.is_hidden("#mixer")
    assert (
        page.get_attribute(f"#history button[data-result='{results[0]}']", "aria-pressed") == "true"
    )
    with page.expect_download() as download:
        page.click("[data-download=target][data-format=wav]")
    assert download.value.suggested_filename == "mixture-vocals-estimate.wav"

    page.click("#history button[data-result='" + results[2] + "']")
    wait_until(
        page,
        "() => !document.getElementById('mixer').hidden && mixer.result && mixer.result.id === '"
        + results[2]
        + "'",
    )
    assert page.is_disabled("[data-source=target]")
    page.click("#history button[data-result='" + results[1] + "']")
    wait_until(page, f"() => {PLAYER}.dataset.result === '{results[1]}'")
    with page.expect_download() as download:
        page.click("[data-download=rest][data-format=flac]")
    assert download.value.suggested_filename == "mixture-drums-rest.flac"

    open_example(page)  # another song: its own history
    assert page.evaluate("() => state.history.length") == 0
    assert page.is_hidden("#history-row")


def test_a_song_too_long_for_the_mixer_gets_its_stems_as_downloads(
    server_url: str, browser
) -> None:  # noqa: ANN001
    page = open_page(browser, server_url)
    open_example(page)
    page.evaluate("() => { mixer.maxSeconds = 4; }")  # the 8 s example is now too long
    page.select_option("#query-a", "stems")
    page.click("#separate")
    wait_until(page, "() => !document.getElementById('mixer').hidden")
    assert page.evaluate("() => mixer.buffers.length") == 0  # nothing decoded
    assert page.is_disabled("#mixer-play")
    assert "download the stems" in page.text_content("#mixer-note")
    with page.expect_download() as download:
        page.click("#stems li[data-stem=vocals] a[data-format=wav]")
    assert download.value.suggested_filename == "mixture-vocals.wav"
    page.click("#stems li[data-stem=vocals] button.mute")  # no gain to set: no error either
    assert page.text_content("#player-error") == ""

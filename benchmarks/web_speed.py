"""How fast the web page answers a musician, measured in a browser on a 3-minute song.

    python benchmarks/web_speed.py                      # the bundled default model, 3 rounds
    python benchmarks/web_speed.py --model fast --rounds 5 --out docs/web_speed-fast.json

Starts ``aqsep serve`` in its own process (as a user does), opens the page in Debian's Chromium
(headless, driven by Playwright, as ``tests/web/test_web_browser.py`` does) and times, each round in
a new tab: opening the song (upload, waveform and player ready), Separate to a playable estimate,
the A/B switch, every stem to a ready mixer and its Play to sound, the slider's switch to a stop
computed ahead (fetched then) and to a stop heard before (from the browser's memory), and a zoom's
detailed picture (the zoom itself redraws at once from the whole song's picture). Each figure is timed inside the page (from
the click to the state the page reports), except the song's opening (from the file chosen, timed
here). Prints the medians and writes every round to ``--out`` (default ``docs/web_speed.json``).

The song: MIR-1K clips (``--mir1k``, default ``../shared/data/mir1k/audio``: the karaoke mixture,
accompaniment + voice) one after another up to 3 minutes, at 44.1 kHz stereo 16-bit as a song
file would be; without MIR-1K, the generated signal of the other speed benchmarks. It is written
to a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, command_line, cpu_model, git_commit, write_test_file  # noqa: E402

MIR1K = REPO.parent / "shared" / "data" / "mir1k" / "audio"
SONG_RATE = 44100
FIGURES = {
    "open_s": "open the song (upload, waveform and player ready)",
    "separate_to_playable_s": "Separate (vocals) to a playable estimate",
    "separate_server_s": "  of which the server's separation",
    "ab_switch_s": "A/B switch (estimate to rest, same position, 2 s after it played)",
    "stems_to_mixer_s": "Separate every stem to the mixer ready",
    "stems_server_s": "  of which the server's separation",
    "mixer_start_s": "the mixer's Play to sound",
    "slider_stops_ahead_s": "the slider's other 4 stops computed in the background",
    "slider_new_stop_s": "slider to a stop computed ahead, not heard",
    "slider_heard_stop_s": "slider back to a stop heard before",
    "zoom_detail_s": "zoom in (drawn at once, stretched) to its full detail",
}


def mir1k_song(folder: Path, seconds: float, out: Path) -> str:
    """MIR-1K's mixtures (left + right channel) end to end, as ``seconds`` of 44.1 kHz stereo."""
    import soundfile as sf

    from aqsep.audio import resample

    parts, total, used = [], 0, 0
    for clip in sorted(folder.glob("*.ogg")):
        audio, sr = sf.read(clip, dtype="float32", always_2d=True)
        parts.append(resample(audio.sum(axis=1)[None] * 0.5, sr, SONG_RATE)[0])
        total += parts[-1].shape[0]
        used += 1
        if total >= seconds * SONG_RATE:
            break
    song = np.concatenate(parts)[: round(seconds * SONG_RATE)]
    sf.write(out, np.stack([song, song], axis=1), SONG_RATE, subtype="PCM_16")
    return f"{used} MIR-1K clips end to end (their mixtures), 44.1 kHz stereo 16-bit WAV"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, port: int) -> tuple[subprocess.Popen, float]:
    """``aqsep serve`` in its own process; the seconds until it serves the page."""
    command = [sys.executable, "-m", "aqsep", "serve", "--port", str(port)]
    if model:
        command += ["--model", model]
    began = time.perf_counter()
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return server, time.perf_counter() - began
        except OSError:
            if server.poll() is not None or time.perf_counter() - began > 120:
                server.kill()
                raise SystemExit("aqsep serve did not start") from None
            time.sleep(0.05)


def timed(page, act: str, done: str, timeout: float = 300.0) -> float:  # noqa: ANN001
    """Seconds from ``act`` (statements run in the page) until ``done`` (an expression) holds,
    polled every 5 ms in the page."""
    return page.evaluate(
        f"""async () => {{
        const t0 = performance.now();
        {act}
        while (!(await ({done}))) {{
          if (performance.now() - t0 > {timeout * 1000}) throw new Error({json.dumps("timed out: " + done)});
          await new Promise((r) => setTimeout(r, 5));
        }}
        return (performance.now() - t0) / 1000;
    }}"""
    )


def wait(page, done: str, timeout: float = 300.0) -> None:  # noqa: ANN001
    timed(page, "", done, timeout)


PLAYER = "document.getElementById('player')"
# Every slider stop but the one asked for computed ahead (their jobs are queued by the worker
# once that one is done, so "no job running" alone could be seen before they are).
AHEAD = """(async () => {
  const jobs = await (await fetch('/api/jobs', {headers: {'X-Session': state.session}})).json();
  const ahead = jobs.filter((j) => j.background && j.state === 'done').length;
  return ahead >= state.config.blend_positions.length - 1;
})()"""


def one_round(browser, url: str, song: Path) -> dict:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.goto(url)
    wait(page, "document.getElementById('query-a').options.length > 0")
    r: dict = {}

    began = time.perf_counter()
    page.set_input_files("#song-file", str(song))
    wait(
        page,
        f"!document.getElementById('separate').disabled && {PLAYER}.readyState >= 1 "
        "&& document.getElementById('wave').dataset.shown === 'song'",
    )
    r["open_s"] = time.perf_counter() - began

    page.select_option("#query-a", "class:vocals")
    r["separate_to_playable_s"] = timed(
        page,
        "document.getElementById('separate').click();",
        f"{PLAYER}.dataset.result && {PLAYER}.dataset.source === 'target' "
        f"&& {PLAYER}.readyState >= 1",
    )
    r["separate_server_s"] = page.evaluate("() => state.job.result.elapsed")
    page.evaluate(f"() => {{ {PLAYER}.currentTime = 60; }}")
    time.sleep(2.0)  # a moment of listening before switching
    r["ab_switch_s"] = timed(
        page,
        "document.querySelector('.ab button[data-source=rest]').click();",
        f"{PLAYER}.dataset.source === 'rest' && {PLAYER}.readyState >= 1",
    )

    page.select_option("#query-a", "stems")
    r["stems_to_mixer_s"] = timed(
        page,
        "document.getElementById('separate').click();",
        "!document.getElementById('mixer').hidden && mixer.buffers.length > 0",
    )
    r["stems_server_s"] = page.evaluate("() => state.job.result.elapsed")
    r["mixer_start_s"] = timed(
        page,
        "document.getElementById('mixer-play').click();",
        "mixer.playing && mixer.ctx.currentTime >= mixer.startedAt",
    )
    page.evaluate("() => mixerPause()")

    page.select_option("#query-a", "class:vocals")
    page.select_option("#query-b", "class:drums")
    timed(
        page,
        "document.getElementById('separate').click();",
        f"state.result && !state.result.stems && state.lastQuery && state.lastQuery.other "
        f"&& {PLAYER}.dataset.result === state.result.id",
    )
    r["slider_stops_ahead_s"] = timed(page, "", AHEAD, timeout=1800)  # computed in the background
    change = (
        "const b = document.getElementById('blend'); b.value = '{}'; "
        "b.dispatchEvent(new Event('change'));"
    )
    shown = (
        f"{PLAYER}.dataset.result && {PLAYER}.dataset.result !== '{{}}' "
        f"&& document.getElementById('wave').dataset.shown === {PLAYER}.dataset.result + '/target'"
    )
    first = page.evaluate(f"() => {PLAYER}.dataset.result")
    r["slider_new_stop_s"] = timed(page, change.format("0.25"), shown.format(first))
    second = page.evaluate(f"() => {PLAYER}.dataset.result")
    r["slider_heard_stop_s"] = timed(page, change.format("0"), shown.format(second))

    r["zoom_detail_s"] = timed(
        page,
        "document.getElementById('zoom-in').click();",
        "state.detail && state.detail.view === state.view",
    )
    if problems:
        raise SystemExit(f"the page failed: {problems}")
    page.close()
    return {k: round(v, 4) for k, v in r.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model for aqsep serve (default: the bundled one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180.0, help="the song's length")
    parser.add_argument("--mir1k", type=Path, default=MIR1K)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web_speed.json")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from aqsep.web.headless import CHROMIUM_ARGS, find_chromium

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium: scripts/install.sh installs Debian's chromium")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aqsep-web-speed-") as tmp:
        song = Path(tmp) / "three minutes.wav"
        if args.mir1k.is_dir():
            source = mir1k_song(args.mir1k, args.seconds, song)
        else:
            write_test_file(song, args.seconds)
            source = "the generated signal of benchmarks/bench_common.py, 44.1 kHz stereo 16-bit"
        port = free_port()
        server, startup = start_server(args.model, port)
        rounds = []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=chromium, headless=True, args=CHROMIUM_ARGS
                )
                try:
                    for i in range(args.rounds):
                        rounds.append(one_round(browser, f"http://127.0.0.1:{port}/", song))
                        print(f"round {i + 1}: {rounds[-1]}", flush=True)
                finally:
                    browser.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
        size_mb = song.stat().st_size / 1e6
    medians = {k: round(statistics.median(r[k] for r in rounds), 3) for k in FIGURES}
    record = {
        "command": command_line("benchmarks/web_speed.py", sys.argv[1:] if argv is None else argv),
        "model": args.model or "the bundled default",
        "song": {"seconds": args.seconds, "source": source, "file_mb": round(size_mb, 1)},
        "machine": {
            "cpu_model": cpu_model(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "gpu": "none used",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "browser": subprocess.run(
                [chromium, "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "commit": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "server_startup_s": round(startup, 3),
        "figures": FIGURES,
        "median": medians,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"\n{args.seconds:g} s song ({source}); model: {record['model']}")
    print(f"aqsep serve ready in {startup:.2f} s; medians of {args.rounds} rounds:")
    for key, words in FIGURES.items():
        print(f"  {words:<66} {medians[key]:8.3f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

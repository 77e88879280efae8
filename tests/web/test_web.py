"""The web page's server (`aqsep serve`) through FastAPI's test client, on a tiny model.

Every endpoint, the slider's positions computed ahead, a cancel that stops the work between
chunks, sessions that never see each other, the upload limit, types told by content, no client
path reaching the disk, temporary files removed, and errors as one line.
"""

from __future__ import annotations

import io
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'aqsep[web]'")
pytest.importorskip("httpx2", reason="FastAPI's test client needs httpx2 (the test extra)")

from conftest import make_audio  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from aqsep import Separator  # noqa: E402
from aqsep.web import create_app  # noqa: E402
from aqsep.web import jobs as web_jobs  # noqa: E402
from aqsep.web.jobs import Workshop  # noqa: E402
from aqsep.web.media import overview, sniff_audio  # noqa: E402

BASE = "http://127.0.0.1"


def wav_bytes(
    seconds: float = 2.0,
    sr: int = 22050,
    channels: int = 1,
    *,
    seed: int = 0,
    fmt: str = "WAV",
    subtype: str = "PCM_16",
    audio: np.ndarray | None = None,
) -> bytes:
    audio = make_audio(seconds, sr, channels, seed=seed) if audio is None else audio
    buf = io.BytesIO()
    sf.write(buf, audio.T, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def read(content: bytes) -> tuple[np.ndarray, int]:
    data, sr = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    return data.T, sr


@pytest.fixture(scope="module")
def separator(tiny_model_dir: Path) -> Separator:
    # four chunks per forward pass (the tiny model's are short: left to itself it would put a
    # 3-s song in one batch), so that a job reports progress and can stop in several steps
    return Separator(tiny_model_dir, device="cpu", batch_size=4)


class Page:
    """One browser tab: a session of a test client."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.config = client.post("/api/session").json()
        self.headers = {"X-Session": self.config["session"]}

    @property
    def workshop(self) -> Workshop:
        return self.client.app.state.workshop  # type: ignore[attr-defined]

    def get(self, path: str, **kw: object):  # noqa: ANN201
        return self.client.get(path, headers=self.headers, **kw)  # type: ignore[arg-type]

    def post(self, path: str, **kw: object):  # noqa: ANN201
        headers = {**self.headers, **kw.pop("headers", {})}  # type: ignore[dict-item]
        return self.client.post(path, headers=headers, **kw)  # type: ignore[arg-type]

    def upload(self, path: str, content: bytes, name: str = "song.wav"):  # noqa: ANN201
        return self.post(path, content=content, headers={"X-Filename": name})

    def song(self, content: bytes | None = None, name: str = "song.wav") -> dict:
        response = self.upload("/api/song", content or wav_bytes(), name)
        assert response.status_code == 200, response.text
        return response.json()

    def submit(self, song: dict, query: dict, **extra: object) -> dict:
        response = self.post("/api/jobs", json={"song": song["id"], "query": query, **extra})
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job: dict, timeout: float = 60.0) -> dict:
        end = time.monotonic() + timeout
        while job["state"] in ("queued", "running"):
            assert time.monotonic() < end, f"job still {job['state']} after {timeout} s"
            time.sleep(0.02)
            job = self.get(f"/api/jobs/{job['id']}").json()
        return job

    def separate(self, song: dict, query: dict, **extra: object) -> dict:
        job = self.wait(self.submit(song, query, **extra))
        assert job["state"] == "done", job
        return job

    def idle(self, timeout: float = 60.0) -> list[dict]:
        """Wait until no job of this session is queued or running (slider positions included)."""
        end = time.monotonic() + timeout
        while True:
            jobs = self.get("/api/jobs").json()
            if not any(j["state"] in ("queued", "running") for j in jobs):
                return jobs
            assert time.monotonic() < end, jobs
            time.sleep(0.02)


@pytest.fixture
def make_client(separator: Separator, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**create_app_options)``: a started app (its lifespan runs) and its client."""
    opened: list[TestClient] = []

    def make(**options: object) -> TestClient:
        options.setdefault("temp_root", tmp_path)
        raise_errors = bool(options.pop("raise_errors", True))
        client = TestClient(
            create_app(separator, **options),  # type: ignore[arg-type]
            base_url=BASE,
            raise_server_exceptions=raise_errors,
        )
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def page(make_client: Callable[..., TestClient]) -> Page:
    return Page(make_client())


def one_line_error(response, status: int) -> str:  # noqa: ANN001
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ---- the page ------------------------------------------------------------------------------


def test_the_page_and_every_script_come_from_the_package(page: Page) -> None:
    response = page.client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = response.text
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert {"/static/app.js", "/static/style.css"} <= set(refs)
    for ref in refs:
        assert ref.startswith("/static/"), ref
        served = page.client.get(ref)
        assert served.status_code == 200, ref
        assert "http://" not in served.text and "https://" not in served.text, ref
    assert page.client.get("/static/../jobs.py").status_code == 404


def test_session_lists_the_models_classes_and_limits(page: Page, separator: Separator) -> None:
    assert page.config["classes"] == separator.classes
    assert page.config["blend_positions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert page.config["example"] is True
    assert page.config["max_upload"] == 200_000_000


def test_a_request_from_another_site_name_is_refused(page: Page) -> None:
    # a web site that rebinds its own name to 127.0.0.1 still sends its name as Host
    response = page.client.get("/", headers={"Host": "attacker.example"})
    assert response.status_code == 400


# ---- songs ---------------------------------------------------------------------------------


def test_upload_a_song_see_it_and_get_it_back_at_its_rate_and_channels(page: Page) -> None:
    audio = make_audio(1.5, 44100, 2, seed=3)
    song = page.song(wav_bytes(audio=audio, sr=44100), name="My Song.wav")
    assert song["name"] == "My Song.wav"
    assert (song["sample_rate"], song["channels"], song["seconds"]) == (44100, 2, 1.5)

    view = page.get(f"/api/song/{song['id']}/overview?columns=300").json()
    zoom = page.get(f"/api/song/{song['id']}/overview?columns=100&start=0.5&end=1.0").json()
    assert zoom["columns"] == 100 and zoom["start"] == 0.5 and zoom["end"] == 1.0
    one_line_error(page.get(f"/api/song/{song['id']}/overview?start=1&end=0.5"), 400)
    assert view["columns"] == 300 and len(view["peaks"]) == 600
    peaks = np.array(view["peaks"]).reshape(-1, 2)
    assert np.all(peaks[:, 0] <= peaks[:, 1]) and peaks.max() > 0.1
    spec = view["spectrogram"]
    assert (
        spec["width"] == 300
        and len(np.frombuffer(__import__("base64").b64decode(spec["data"]), np.uint8))
        == 300 * spec["height"]
    )

    for fmt in ("wav", "flac"):
        response = page.get(f"/api/song/{song['id']}/audio?format={fmt}")
        assert response.status_code == 200
        assert response.headers["content-type"] == f"audio/{fmt}"
        assert f'filename="My_Song-mixture.{fmt}"' in response.headers["content-disposition"]
        back, sr = read(response.content)
        assert sr == 44100 and back.shape == audio.shape
        assert np.abs(back - audio).max() < 2 / 32768


def test_the_bundled_example_opens(page: Page) -> None:
    song = page.post("/api/song/example").json()
    assert song["name"].startswith("mixture.wav")
    assert (song["sample_rate"], song["channels"], song["seconds"]) == (22050, 1, 8.0)


def test_overview_shows_a_tone_at_its_frequency(tmp_path: Path) -> None:
    sr = 22050
    t = np.arange(sr * 2) / sr
    path = tmp_path / "tone.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t), sr)
    view = overview(path, columns=50, rows=120)
    spec = view["spectrogram"]
    image = np.frombuffer(__import__("base64").b64decode(spec["data"]), np.uint8)
    image = image.reshape(spec["height"], spec["width"])
    brightest = int(np.argmax(image[:, 25]))
    freqs = np.geomspace(spec["fmax"], spec["fmin"], spec["height"])
    assert abs(np.log2(freqs[brightest] / 1000)) < 0.1  # within a tenth of an octave
    assert image[:, 25].max() == 255 and np.median(image[:, 25]) < 128


def test_a_zoomed_overview_draws_only_its_span_in_the_whole_songs_colours(
    tmp_path: Path,
) -> None:
    sr = 22050
    t = np.arange(sr * 2) / sr
    tone = np.where(t < 1.0, np.sin(2 * np.pi * 500 * t), 0.1 * np.sin(2 * np.pi * 3000 * t))
    path = tmp_path / "two tones.wav"
    sf.write(path, 0.5 * tone, sr)
    whole = overview(path, columns=40)
    top = whole["spectrogram"]["top_db"]
    zoom = overview(path, columns=40, start=1.25, end=1.75, top_db=top)
    assert zoom["seconds"] == 2.0
    assert (zoom["start"], zoom["end"]) == pytest.approx((1.25, 1.75), abs=1 / sr)
    spec = zoom["spectrogram"]
    image = np.frombuffer(__import__("base64").b64decode(spec["data"]), np.uint8)
    image = image.reshape(spec["height"], spec["width"])
    freqs = np.geomspace(spec["fmax"], spec["fmin"], spec["height"])
    brightest = freqs[np.argmax(image, axis=0)]
    assert np.all(np.abs(np.log2(brightest / 3000)) < 0.1)  # only the second tone is in view
    assert image.max() < 255  # 20 dB under the loudest cell of the whole song, not 255
    assert max(abs(v) for v in zoom["peaks"]) < 0.06
    alone = overview(path, columns=40, start=1.25, end=1.75)
    assert alone["spectrogram"]["top_db"] < top - 10  # alone, it would be drawn brightest


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02\x00\x00", "ogg"),
        (b"ID3\x04\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64\x00\x00", "mp3"),
        (b"\xff\xf1\x50\x80\x00\x1f", "aac"),
        (b"\x00\x00\x00\x20ftypM4A ", "m4a"),
        (b"FORM\x00\x00\x00\x10AIFFCOMM", "aiff"),
        (b"RIFF\x24\x00\x00\x00AVI LIST", None),
        (b"%PDF-1.7\n", None),
        (b"<html><script>", None),
        (b"\xff\xd8\xff\xe0JFIF", None),  # JPEG
        (b"", None),
    ],
)
def test_sniff_audio_reads_the_content(head: bytes, kind: str | None) -> None:
    assert sniff_audio(head) == kind


def test_file_type_is_told_by_content_not_by_name(page: Page) -> None:
    message = one_line_error(page.upload("/api/song", b"just some text" * 50, "song.wav"), 415)
    assert "not an audio file" in message
    # a FLAC file under a misleading name is a FLAC song
    flac = wav_bytes(1.0, fmt="FLAC")
    song = page.song(flac, name="notes.txt")
    stored = page.workshop.sessions[page.config["session"]].song
    assert stored is not None and stored.path.name == "song.flac" and song["seconds"] == 1.0
    # a WAV header over garbage: the right start, but not decodable audio
    broken = wav_bytes(1.0)[:44] + b"\x00\x01" * 3
    message = one_line_error(page.upload("/api/song", broken[:40], "broken.wav"), 415)
    assert message.startswith("broken.wav") and str(page.workshop.root) not in message
    assert message.count("broken.wav") == 1, message  # named once, not "broken.wav: broken.wav:"
    assert one_line_error(page.upload("/api/song", b"", "empty.wav"), 400)


def test_uploads_over_the_limit_are_refused_while_they_arrive(
    make_client: Callable[..., TestClient],
) -> None:
    page = Page(make_client(max_upload=50_000))
    big = wav_bytes(3.0)  # 132 kB
    message = one_line_error(page.upload("/api/song", big, "big.wav"), 413)
    assert "upload limit of 0.05 MB" in message

    def trickle() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    response = page.post("/api/song", content=trickle(), headers={"X-Filename": "big.wav"})
    one_line_error(response, 413)
    one_line_error(page.upload("/api/clips", big, "clip.wav"), 413)
    session = page.workshop.sessions[page.config["session"]]
    assert files_under(session.folder) == []  # nothing half-received is kept
    page.song(wav_bytes(1.0))  # under the limit: fine


def test_uploads_longer_than_the_limit_are_refused_and_not_kept(page: Page) -> None:
    page.workshop.max_seconds = 2.0  # the default is an hour, MAX_SECONDS
    for url in ("/api/song", "/api/clips"):
        message = one_line_error(page.upload(url, wav_bytes(3.0), "long.wav"), 413)
        assert message.startswith("long.wav") and "at most" in message and "minutes" in message
    session = page.workshop.sessions[page.config["session"]]
    assert files_under(session.folder) == [] and session.song is None and not session.clips
    page.song(wav_bytes(1.0))  # within the limit: fine


# ---- separating ----------------------------------------------------------------------------


def test_separate_by_a_region_gives_estimate_and_rest_at_the_songs_rate(page: Page) -> None:
    audio = make_audio(3.0, 44100, 2, seed=1)
    song = page.song(wav_bytes(audio=audio, sr=44100))
    job = page.separate(song, {"kind": "range", "start": 0.5, "end": 2.0})
    assert job["progress"] == 1.0 and job["chunks"] > 1 and not job["cached"]
    rid = job["result"]["id"]
    stems = {}
    for stem in ("target", "rest", "mixture"):
        response = page.get(f"/api/results/{rid}/{stem}")
        assert response.status_code == 200
        stems[stem], sr = read(response.content)
        assert sr == 44100 and stems[stem].shape == audio.shape
        flac = page.get(f"/api/results/{rid}/{stem}?format=flac")
        assert flac.headers["content-type"] == "audio/flac"
        assert np.array_equal(read(flac.content)[0], stems[stem])  # lossless, same samples
    assert np.abs(stems["target"] + stems["rest"] - stems["mixture"]).max() < 3 / 32768
    assert np.abs(stems["target"]).max() > 1e-3 and not np.allclose(stems["target"], audio)
    view = page.get(f"/api/results/{rid}/target/overview?columns=100").json()
    assert view["columns"] == 100 and view["seconds"] == 3.0


def test_separate_by_query_clips_and_by_class(page: Page) -> None:
    song = page.song(wav_bytes(2.0, seed=1))
    clips = [
        page.upload("/api/clips", wav_bytes(1.0, seed=s), f"clip{s}.wav").json() for s in (5, 6)
    ]
    assert [c["name"] for c in page.get("/api/clips").json()] == ["clip5.wav", "clip6.wav"]
    heard, sr = read(page.get(f"/api/clips/{clips[0]['id']}/audio").content)
    assert sr == 22050 and heard.shape[-1] == 22050  # the clip, to play before separating
    by_clips = page.separate(song, {"kind": "clips", "clips": [c["id"] for c in clips]})
    by_class = page.separate(song, {"kind": "class", "name": "drums"})
    a = read(page.get(f"/api/results/{by_clips['result']['id']}/target").content)[0]
    b = read(page.get(f"/api/results/{by_class['result']['id']}/target").content)[0]
    assert a.shape == b.shape and not np.allclose(a, b)  # different queries, different estimates

    message = one_line_error(
        page.post(
            "/api/jobs", json={"song": song["id"], "query": {"kind": "class", "name": "kazoo"}}
        ),
        400,
    )
    assert "unknown class 'kazoo'" in message and "drums" in message
    assert (
        page.client.delete(f"/api/clips/{clips[0]['id']}", headers=page.headers).status_code == 204
    )
    response = page.post(
        "/api/jobs",
        json={"song": song["id"], "query": {"kind": "clips", "clips": [clips[0]["id"]]}},
    )
    one_line_error(response, 404)


def test_every_stem_in_one_pass_sums_to_the_song_and_zips(
    page: Page, separator: Separator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    audio = make_audio(2.5, 44100, 2, seed=7)
    song = page.song(wav_bytes(audio=audio, sr=44100), name="My Song.wav")
    passes: list[list[str]] = []
    separate_file = separator.separate_file

    def counted(path, out_dir, latent, **options):  # noqa: ANN001, ANN003, ANN202
        passes.append(list(latent))
        return separate_file(path, out_dir, latent, **options)

    monkeypatch.setattr(separator, "separate_file", counted)
    job = page.separate(song, {"kind": "stems"})
    assert passes == [separator.coarse_classes]  # one pass over the song for every stem
    result = job["result"]
    assert result["stems"] is True and result["label"] == "every stem"
    assert result["files"] == separator.coarse_classes
    mixture = read(page.get(f"/api/results/{result['id']}/mixture").content)[0]
    stems = {}
    for name in result["files"]:
        response = page.get(f"/api/results/{result['id']}/{name}")
        assert response.status_code == 200
        assert f'filename="My_Song-{name}.wav"' in response.headers["content-disposition"]
        stems[name] = read(response.content)[0]
        assert stems[name].shape == audio.shape
    total = sum(stems.values())
    assert np.abs(total - mixture).max() < len(stems) / 32768  # 16-bit rounding of each stem
    assert all(np.abs(s).max() > 1e-3 for s in stems.values())
    assert not np.allclose(stems["vocals"], stems["drums"], atol=1e-3)
    view = page.get(f"/api/results/{result['id']}/bass/overview?columns=50").json()
    assert view["columns"] == 50

    response = page.get(f"/api/results/{result['id']}/all.zip?format=flac")
    assert response.status_code == 200
    assert 'filename="My_Song-stems.zip"' in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert names == [f"My_Song-{n}.flac" for n in result["files"]]
        for name in result["files"]:
            inside = read(archive.read(f"My_Song-{name}.flac"))[0]
            assert np.array_equal(inside, stems[name])  # lossless: the same samples as the WAV
    one_line_error(page.get(f"/api/results/{result['id']}/target"), 404)

    for extra, words in (
        ({"other": {"kind": "class", "name": "drums"}}, "no slider"),
        ({"refine": 1}, "not refined"),
    ):
        message = one_line_error(
            page.post("/api/jobs", json={"song": song["id"], "query": {"kind": "stems"}, **extra}),
            400,
        )
        assert words in message


def test_refine_steps_run_more_passes(page: Page) -> None:
    song = page.song(wav_bytes(2.0, seed=2))
    plain = page.separate(song, {"kind": "class", "name": "bass"})
    refined = page.separate(song, {"kind": "class", "name": "bass"}, refine=2)
    assert refined["chunks"] == 3 * plain["chunks"]  # two refinement passes, then the separation
    a = read(page.get(f"/api/results/{plain['result']['id']}/target").content)[0]
    b = read(page.get(f"/api/results/{refined['result']['id']}/target").content)[0]
    assert not np.allclose(a, b)
    one_line_error(
        page.post(
            "/api/jobs",
            json={"song": song["id"], "query": {"kind": "class", "name": "bass"}, "refine": 9},
        ),
        422,
    )


def test_slider_positions_are_computed_ahead_and_cached(page: Page) -> None:
    song = page.song(wav_bytes(2.0, seed=4))
    a, b = {"kind": "class", "name": "vocals"}, {"kind": "range", "start": 0.2, "end": 1.5}
    first = page.separate(song, a, other=b, alpha=0.5)
    jobs = page.idle()
    ahead = sorted(j["alpha"] for j in jobs if j["background"])
    assert ahead == [0.0, 0.25, 0.75, 1.0] and all(j["state"] == "done" for j in jobs)
    runs = page.workshop.separations
    assert runs == 5

    moved = page.submit(song, a, other=b, alpha=0.75)  # the slider moves: the answer is ready
    assert moved["state"] == "done" and moved["cached"] and page.workshop.separations == runs
    again = page.submit(song, a, other=b, alpha=0.5)
    assert again["cached"] and again["result"]["id"] == first["result"]["id"]

    def target(job: dict) -> np.ndarray:
        return read(page.get(f"/api/results/{job['result']['id']}/target").content)[0]

    ends = [page.submit(song, a, other=b, alpha=x) for x in (0.0, 1.0)]
    only_a, only_b = page.separate(song, a), page.separate(song, b)  # no slider: one query
    assert np.allclose(target(ends[0]), target(only_a), atol=2 / 32768)
    assert np.allclose(target(ends[1]), target(only_b), atol=2 / 32768)
    assert not np.allclose(target(moved), target(only_a), atol=1e-3)


@pytest.fixture
def slow_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch of chunks takes at least 30 ms more (a long song on a slow machine)."""
    report = web_jobs._JobProgress.__call__

    def slowly(self: web_jobs._JobProgress, info: dict) -> None:
        time.sleep(0.03)
        report(self, info)

    monkeypatch.setattr(web_jobs._JobProgress, "__call__", slowly)


def test_cancel_stops_the_work_between_chunks(page: Page, slow_chunks: None) -> None:
    song = page.song(wav_bytes(12.0, seed=5))  # about 90 chunks of the tiny model
    job = page.submit(song, {"kind": "class", "name": "drums"})
    queued = page.submit(song, {"kind": "class", "name": "bass"})
    while job["chunks"] < 2:
        time.sleep(0.01)
        job = page.get(f"/api/jobs/{job['id']}").json()
    seen = job["chunks"]
    assert page.post(f"/api/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"
    page.post(f"/api/jobs/{job['id']}/cancel")
    job = page.wait(job)
    assert job["state"] == "cancelled" and job["result"] is None
    assert job["chunks"] <= seen + 2 and job["progress"] < 0.5  # it stopped where it was
    session = page.workshop.sessions[page.config["session"]]
    assert files_under(session.folder / "results") == []  # the half-written outputs are gone
    assert page.workshop.separations == 0  # neither job finished
    queued = page.get(f"/api/jobs/{queued['id']}").json()
    assert queued["state"] == "cancelled" and queued["chunks"] == 0  # never started
    done = page.separate(song, {"kind": "class", "name": "vocals"})  # the worker is free again
    assert done["state"] == "done"


def test_two_tabs_never_see_each_others_songs(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    alice, bob = Page(client), Page(client)
    song = alice.song(wav_bytes(1.0), name="alice.wav")
    clip = alice.upload("/api/clips", wav_bytes(1.0, seed=2), "alice-clip.wav").json()
    job = alice.separate(song, {"kind": "class", "name": "drums"})
    rid = job["result"]["id"]
    for path in (
        f"/api/song/{song['id']}",
        f"/api/song/{song['id']}/overview",
        f"/api/song/{song['id']}/audio",
        f"/api/jobs/{job['id']}",
        f"/api/results/{rid}/target",
        f"/api/results/{rid}/mixture",
    ):
        assert bob.get(path).status_code == 404, path
        assert alice.get(path).status_code == 200, path
    assert bob.get("/api/jobs").json() == [] and bob.get("/api/clips").json() == []
    one_line_error(bob.post(f"/api/jobs/{job['id']}/cancel"), 404)
    assert client.delete(f"/api/clips/{clip['id']}", headers=bob.headers).status_code == 404
    response = bob.post(
        "/api/jobs", json={"song": song["id"], "query": {"kind": "class", "name": "bass"}}
    )
    one_line_error(response, 404)
    # without a session, or with a made-up one: nothing
    one_line_error(client.get("/api/jobs"), 401)
    one_line_error(client.get("/api/jobs", headers={"X-Session": "A" * 16}), 401)
    one_line_error(client.get("/api/jobs", headers={"X-Session": "../../etc"}), 401)
    # bob's own song does not disturb alice's
    bob.song(wav_bytes(1.0, seed=9), name="bob.wav")
    assert alice.get(f"/api/song/{song['id']}").json()["name"] == "alice.wav"


def test_no_path_from_the_client_reaches_the_file_system(page: Page) -> None:
    song = page.song(wav_bytes(1.0), name="../../../../tmp/evil.wav")
    assert song["name"] == "evil.wav"
    root = page.workshop.root
    assert not Path("/tmp/evil.wav").exists()
    stored = files_under(root)
    assert stored and all("evil" not in p.name for p in stored)
    for path in (
        "/api/song/..%2F..%2Fetc%2Fpasswd/audio",
        "/api/results/..%2F..%2Fsongs/target",
        "/api/results/x/..%2Fsong",
        f"/api/song/{song['id']}/audio?format=..%2F..%2Fetc%2Fpasswd",
    ):
        response = page.get(path)
        assert response.status_code in (404, 422), path
        one_line_error(response, response.status_code)


def test_temporary_files_go_when_jobs_end_songs_change_and_the_server_stops(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    page = Page(client)
    root = page.workshop.root
    session = page.workshop.sessions[page.config["session"]]
    silent = wav_bytes(audio=np.zeros((1, 22050), np.float32))
    song = page.song(silent)
    failed = page.wait(page.submit(song, {"kind": "range", "start": 0.1, "end": 0.9}))
    assert failed["state"] == "error" and "silent" in failed["error"]
    assert str(root) not in failed["error"] and "\n" not in failed["error"]
    assert files_under(session.folder / "results") == []

    song = page.song(wav_bytes(1.0, seed=1))
    done = page.separate(song, {"kind": "class", "name": "drums"})
    kept = files_under(session.folder)
    assert len([p for p in kept if p.suffix == ".wav" and "results" in p.parts]) == 2
    assert not any(p.suffix == ".part" for p in kept)
    page.song(wav_bytes(1.0, seed=2))  # a new song: the old one and its results go
    assert page.get(f"/api/results/{done['result']['id']}/target").status_code == 404
    assert len([p for p in files_under(session.folder) if "songs" in p.parts]) == 1
    assert files_under(session.folder / "results") == []

    other = Page(client)
    other.song(wav_bytes(1.0))
    folder = page.workshop.sessions[other.config["session"]].folder
    response = client.post("/api/session/end", json={"session": other.config["session"]})
    assert response.status_code == 204 and not folder.exists()

    client.__exit__(None, None, None)  # the server stops
    assert not root.exists()


def test_folders_of_killed_servers_are_removed_at_start(
    separator: Separator, tmp_path: Path
) -> None:
    killed = tmp_path / "aqsep-web-999999999-abcd"  # no such process
    (killed / "session").mkdir(parents=True)
    running = tmp_path / f"aqsep-web-{os.getpid()}-efgh"  # a server of a running process
    running.mkdir()
    unrelated = tmp_path / "aqsep-web-notes"
    unrelated.mkdir()
    workshop = Workshop(separator, root=tmp_path)
    try:
        assert not killed.exists() and running.exists() and unrelated.exists()
        assert workshop.root.parent == tmp_path and workshop.root.exists()
    finally:
        workshop.close()


def test_idle_sessions_expire_with_their_files(separator: Separator, tmp_path: Path) -> None:
    workshop = Workshop(separator, root=tmp_path, session_ttl=0.05)
    try:
        session = workshop.new_session()
        (session.folder / "some.wav").write_bytes(b"x")
        time.sleep(0.1)
        workshop._expire()
        assert session.id not in workshop.sessions and not session.folder.exists()
    finally:
        workshop.close()
    assert not workshop.root.exists()


def test_errors_are_one_line_json(make_client: Callable[..., TestClient], monkeypatch) -> None:  # noqa: ANN001
    page = Page(make_client(raise_errors=False))
    song = page.song(wav_bytes(1.0))
    assert one_line_error(page.post("/api/jobs", content=b"{not json"), 422).startswith(
        "bad request"
    )
    message = one_line_error(
        page.post(
            "/api/jobs", json={"song": song["id"], "query": {"kind": "range", "start": 5, "end": 6}}
        ),
        400,
    )
    assert "after the song's end" in message
    one_line_error(page.get("/api/nothing-here"), 404)

    def broken(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr("aqsep.web.server.overview", broken)
    message = one_line_error(page.get(f"/api/song/{song['id']}/overview"), 500)
    assert message.startswith("internal error (RuntimeError)") and "a bug" not in message


# ---- the command ---------------------------------------------------------------------------


def test_serve_command_defaults_to_this_machine(cli) -> None:  # noqa: ANN001
    from aqsep.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_upload_mb) == ("127.0.0.1", 8000, 200.0)
    result = cli("serve", "--help")
    assert result.code == 0 and "127.0.0.1" in result.out


def test_serve_command_says_in_one_line_when_the_port_is_taken(cli) -> None:  # noqa: ANN001
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = cli("serve", "--port", port).one_line_error()
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_state_changing_calls_from_another_web_site_are_refused(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    foreign = {"Origin": "http://evil.example"}
    message = one_line_error(client.post("/api/session", headers=foreign), 403)
    assert "another web site" in message
    assert one_line_error(client.post("/api/session", headers={"Origin": "null"}), 403)
    # the page's own origin, and no Origin at all (curl, the test client), are served
    assert client.post("/api/session", headers={"Origin": BASE}).status_code == 200
    assert client.post("/api/session").status_code == 200
    # reading is not refused: a foreign page cannot read the answer anyway
    assert client.get("/", headers=foreign).status_code == 200


def test_sessions_are_bounded(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_sessions=3)
    sessions = [client.post("/api/session").json()["session"] for _ in range(3)]
    message = one_line_error(client.post("/api/session"), 503)
    assert "3 open pages" in message
    client.post("/api/session/end", json={"session": sessions[0]})
    assert client.post("/api/session").status_code == 200

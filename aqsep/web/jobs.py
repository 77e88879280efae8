"""Sessions, files and separation jobs behind the web page.

One :class:`Workshop` holds a loaded :class:`aqsep.Separator` and runs every job on one worker
thread, in order: jobs a user asked for first, then the slider positions computed ahead in the
background. Each browser tab is a session with its own folder, song, query clips, latents and
results; nothing is shared between sessions, and a session only reaches its own things by the
random ids this module made. No name or path that came from a client is ever used as a path.

A job is cancelled through the separator's progress callback: it is called after every batch
of chunks, and raises :class:`Cancelled` once the job's flag is set, which stops the chunk loop
there (the output being written is removed by its atomic writer).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from aqsep.api import Query, Separator
from aqsep.audio import AudioInfo, _pid_alive, audio_info
from aqsep.errors import AqsepError, AudioError, QueryError
from aqsep.inference import Latent
from aqsep.web.media import convert

log = logging.getLogger("aqsep.web")

ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
FORMATS = ("wav", "flac")
MAX_REFINE = 4
# The longest song or clip the page takes: its cost (decoding, the overview, every separation)
# grows with duration, which a small compressed upload can make hours long.
MAX_SECONDS = 3600.0
ROOT_PREFIX = "aqsep-web-"  # + process id + "-" + random: one folder per running server


class WebError(Exception):
    """A request that cannot be served: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """Raised inside a job's progress callback once the job is cancelled."""


def new_id() -> str:
    return secrets.token_urlsafe(12)


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_name(name: str | None, default: str) -> str:
    """A client's file name as a label only: printable characters, no folders, at most 80."""
    text = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    return text[:80] or default


@dataclass(frozen=True)
class QuerySpec:
    """What to look for: a time range of the song, uploaded clips, a class of the model, or
    ``"stems"``: every coarse class of the model at once (vocals, drums, bass, other), in one
    pass, their ratio masks making the stems sum to the song."""

    kind: str  # "range" | "clips" | "class" | "stems"
    start: float = 0.0
    end: float = 0.0
    clips: tuple[str, ...] = ()
    name: str = ""

    def key(self) -> tuple:
        if self.kind == "range":
            return ("range", round(self.start, 3), round(self.end, 3))
        if self.kind == "clips":
            return ("clips", tuple(sorted(self.clips)))
        if self.kind == "stems":
            return ("stems",)
        return ("class", self.name.lower())

    def describe(self) -> str:
        """A few words for the page: ``vocals``, ``the region 5.00-8.00 s``, ``2 clips``."""
        if self.kind == "range":
            return f"the region {self.start:.2f}-{self.end:.2f} s"
        if self.kind == "clips":
            return f"{len(self.clips)} clip{'s' if len(self.clips) != 1 else ''}"
        if self.kind == "stems":
            return "every stem"
        return self.name


@dataclass(frozen=True)
class Request:
    """One separation: the song, the query, optionally a second query and the slider position
    between them (slerp: 0 is ``query``, 1 is ``other``), and refinement steps."""

    song: str
    query: QuerySpec
    other: QuerySpec | None = None
    alpha: float = 0.0
    refine: int = 0

    def key(self) -> tuple:
        other = None if self.other is None else self.other.key()
        alpha = 0.0 if self.other is None else round(self.alpha, 4)
        return (self.song, self.query.key(), other, alpha, self.refine)

    def at(self, alpha: float) -> Request:
        return Request(self.song, self.query, self.other, alpha, self.refine)

    def describe(self) -> str:
        """Which query made a result, for the page's history: ``vocals``, ``vocals to drums at
        0.25``, with ``, refined twice`` after two refinement steps."""
        words = self.query.describe()
        if self.other is not None:
            words += f" to {self.other.describe()} at {self.alpha:.2f}"
        if self.refine:
            words += f", refined {self.refine}x"
        return words


@dataclass
class Song:
    id: str
    name: str
    path: Path
    seconds: float
    sample_rate: int
    channels: int

    def public(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "seconds": self.seconds,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
        }


@dataclass
class Clip:
    id: str
    name: str
    path: Path
    seconds: float

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "seconds": self.seconds}


@dataclass
class Result:
    id: str
    request: Request
    folder: Path
    # 16-bit WAV at the song's rate and channels: "target" and "rest", or one file per stem
    files: dict[str, Path]
    elapsed: float

    @property
    def stems(self) -> bool:
        return self.request.query.kind == "stems"

    def public(self) -> dict:
        return {
            "id": self.id,
            "elapsed": round(self.elapsed, 3),
            "alpha": self.request.alpha,
            "label": self.request.describe(),
            "files": list(self.files),
            "stems": self.stems,
        }


@dataclass
class Job:
    id: str
    session: str
    request: Request
    background: bool = False
    state: str = "queued"  # queued, running, done, cancelled, error
    progress: float = 0.0
    stage: str = "waiting"
    chunks: int = 0  # progress reports received (one per batch of chunks)
    error: str | None = None
    result: Result | None = None
    cached: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def public(self) -> dict:
        return {
            "id": self.id,
            "state": self.state,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "chunks": self.chunks,
            "error": self.error,
            "background": self.background,
            "cached": self.cached,
            "alpha": self.request.alpha if self.request.other is not None else None,
            "result": None if self.result is None else self.result.public(),
        }


@dataclass
class Session:
    id: str
    folder: Path
    song: Song | None = None
    clips: dict[str, Clip] = field(default_factory=dict)
    results: dict[tuple, Result] = field(default_factory=dict)  # by Request.key()
    jobs: dict[str, Job] = field(default_factory=dict)
    latents: dict[tuple, Latent] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)

    def result(self, result_id: str) -> Result:
        for r in self.results.values():
            if r.id == result_id:
                return r
        raise WebError(404, "no such result in this session (it may belong to a closed song)")


class _JobProgress:
    """The separator's progress callback for one job: overall progress over every pass (the
    refinement passes, then the separation: the events' ``pass`` of ``passes``) and the cancel
    check between chunks."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def check(self) -> None:
        if self.job.cancel.is_set():
            raise Cancelled

    def __call__(self, info: dict) -> None:
        self.check()
        done, total = int(info["done"]), max(1, int(info["total"]))
        index, passes = int(info.get("pass", 1)) - 1, max(1, int(info.get("passes", 1)))
        self.job.chunks += 1
        self.job.progress = min(1.0, (index + done / total) / passes)
        refining = index < passes - 1
        self.job.stage = f"refining ({index + 1}/{passes - 1})" if refining else "separating"


def _played(path: Path) -> Path:
    """Where the WAV copy of an uploaded file goes (beside it)."""
    return path.with_name(f"{path.stem}-played.wav")


def remove_stale_roots(parent: Path) -> list[Path]:
    """Remove the folders of servers that were killed before they could clean up (their process
    id, in the folder's name, no longer runs on this machine)."""
    removed = []
    for folder in parent.glob(f"{ROOT_PREFIX}*-*"):
        pid = folder.name[len(ROOT_PREFIX) :].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class Workshop:
    """The server's state: sessions, their files, and the worker that runs separation jobs.

    Args:
        separator: the loaded model and chunk settings every job uses.
        root: where session folders go (default: a new temporary folder, removed by :meth:`close`).
        max_upload: bytes per uploaded file.
        session_ttl: seconds after which an idle session and its files are removed.
        blend_positions: slider stops computed ahead (0, 1/(n-1), ..., 1) after a blended result.
        max_clips: query clips a session may hold.
        max_sessions: sessions (browser tabs) open at once; one more is refused.
    """

    def __init__(
        self,
        separator: Separator,
        *,
        root: Path | None = None,
        max_upload: int = 200 * 1000 * 1000,
        session_ttl: float = 2 * 3600.0,
        blend_positions: int = 5,
        max_clips: int = 8,
        max_queued: int = 16,
        max_sessions: int = 64,
    ) -> None:
        self.separator = separator
        parent = Path(root) if root is not None else Path(tempfile.gettempdir())
        remove_stale_roots(parent)
        self.root = Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-", dir=parent))
        self.max_upload, self.session_ttl = max_upload, session_ttl
        self.max_seconds = MAX_SECONDS
        self.blend_positions = [i / (blend_positions - 1) for i in range(blend_positions)]
        self.max_clips, self.max_queued = max_clips, max_queued
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}
        self.queue: list[Job] = []
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.separations = 0  # separations run (for tests and the log)
        self.worker = threading.Thread(target=self._work, name="aqsep-web-worker", daemon=True)
        self.worker.start()

    # ---- sessions --------------------------------------------------------------------------
    def new_session(self) -> Session:
        self._expire()
        with self.lock:
            if len(self.sessions) >= self.max_sessions:
                raise WebError(
                    503,
                    f"the server holds {self.max_sessions} open pages already: close a tab, or "
                    "try again when an idle one has ended",
                )
        sid = new_id()
        folder = self.root / sid
        folder.mkdir()
        with self.lock:
            session = self.sessions[sid] = Session(sid, folder)
        return session

    def session(self, sid: str | None) -> Session:
        with self.lock:
            session = self.sessions.get(sid or "") if sid and ID.fullmatch(sid) else None
            if session is None:
                raise WebError(
                    401, "this page's session has ended (idle too long, or the server restarted)"
                )
            session.last_seen = time.monotonic()
            return session

    def end_session(self, sid: str) -> None:
        with self.lock:
            session = self.sessions.pop(sid, None)
            if session is None:
                return
            for job in session.jobs.values():
                self._cancel(job)
        shutil.rmtree(session.folder, ignore_errors=True)

    def _expire(self) -> None:
        now = time.monotonic()
        with self.lock:
            idle = [
                s.id
                for s in self.sessions.values()
                if now - s.last_seen > self.session_ttl
                and not any(j.state == "running" for j in s.jobs.values())
            ]
        for sid in idle:
            log.info("session %s idle for %.0f s: removed", sid[:6], self.session_ttl)
            self.end_session(sid)

    # ---- files -----------------------------------------------------------------------------
    def incoming(self, session: Session) -> Path:
        """A new, unique path for an upload in progress (removed by :meth:`discard`)."""
        folder = session.folder / "incoming"
        folder.mkdir(exist_ok=True)
        return folder / f"{new_id()}.part"

    @staticmethod
    def discard(path: Path) -> None:
        path.unlink(missing_ok=True)

    def _checked_audio(self, session: Session, path: Path, label: str) -> AudioInfo:
        try:
            info = audio_info(path)
        except AudioError as err:
            message = self.clean(str(err), session, {path: label})
            # the reader's message usually names the file already (now by the user's name)
            named = message if message.startswith(f"{label}:") else f"{label}: {message}"
            raise WebError(415, named) from None
        if info.frames == 0:
            raise WebError(415, f"{label}: holds no audio")
        if info.seconds > self.max_seconds:
            raise WebError(
                413,
                f"{label}: {info.seconds / 60:.1f} minutes long; this page takes songs and clips "
                f"of at most {self.max_seconds / 60:g} minutes",
            )
        return info

    def open_song(self, session: Session, upload: Path, kind: str, name: str) -> Song:
        """Make ``upload`` (a finished upload of type ``kind``) the session's song; the previous
        song, its jobs and results are removed."""
        info = self._checked_audio(session, upload, name)
        song_id = new_id()
        folder = session.folder / "songs" / song_id
        folder.mkdir(parents=True)
        path = folder / f"song.{kind}"
        upload.replace(path)
        song = Song(song_id, name, path, info.seconds, info.sample_rate, info.channels)
        with self.lock:
            old = session.song
            session.song = song
            for job in session.jobs.values():
                self._cancel(job)
            session.jobs.clear()
            results, session.results = list(session.results.values()), {}
            session.latents.clear()
        for r in results:
            shutil.rmtree(r.folder, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old.path.parent, ignore_errors=True)
        return song

    def add_clip(self, session: Session, upload: Path, kind: str, name: str) -> Clip:
        with self.lock:
            if len(session.clips) >= self.max_clips:
                raise WebError(
                    409, f"at most {self.max_clips} query clips; remove one before adding another"
                )
        info = self._checked_audio(session, upload, name)
        clip_id = new_id()
        folder = session.folder / "clips"
        folder.mkdir(exist_ok=True)
        path = folder / f"{clip_id}.{kind}"
        upload.replace(path)
        clip = Clip(clip_id, name, path, info.seconds)
        with self.lock:
            session.clips[clip_id] = clip
        return clip

    def remove_clip(self, session: Session, clip_id: str) -> None:
        with self.lock:
            clip = session.clips.pop(clip_id, None)
        if clip is None:
            raise WebError(404, "no such query clip in this session")
        clip.path.unlink(missing_ok=True)
        _played(clip.path).unlink(missing_ok=True)

    def clip_wav(self, session: Session, clip_id: str) -> tuple[Path, str]:
        """A query clip as 16-bit WAV at its own rate and channels, made once; and its name."""
        with self.lock:
            clip = session.clips.get(clip_id)
        if clip is None:
            raise WebError(404, "no such query clip in this session")
        out = _played(clip.path)
        if not out.exists():
            convert(clip.path, out, "wav")
        return out, clip.name

    def song(self, session: Session, song_id: str) -> Song:
        song = session.song
        if song is None or song.id != song_id:
            raise WebError(404, "no such song in this session: open a song first")
        return song

    @staticmethod
    def download(path: Path, fmt: str) -> Path:
        """``path`` (a WAV) as ``fmt``, converted once and kept beside it."""
        if fmt == "wav":
            return path
        out = path.with_suffix(f".{fmt}")
        if not out.exists():
            convert(path, out, fmt)
        return out

    def mixture_wav(self, session: Session, song: Song) -> Path:
        """The song as 16-bit WAV at its own rate and channels (what every browser plays)."""
        out = song.path.parent / "mixture.wav"
        if not out.exists():
            convert(song.path, out, "wav")
        return out

    @staticmethod
    def clean(text: str, session: Session, names: dict[Path, str] | None = None) -> str:
        """An error message for the page: the server's own paths replaced by the names the user
        knows, on one line."""
        replace: dict[str, str] = {str(p): n for p, n in (names or {}).items()}
        if session.song is not None:
            replace[str(session.song.path)] = session.song.name
        for clip in session.clips.values():
            replace[str(clip.path)] = clip.name
        for path, name in sorted(replace.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, name)
        text = text.replace(str(session.folder) + "/", "")
        return one_line(text)

    # ---- jobs ------------------------------------------------------------------------------
    def check_request(self, session: Session, request: Request) -> None:
        song = self.song(session, request.song)
        for spec in (request.query, request.other):
            if spec is None:
                continue
            if spec.kind == "stems":
                self._check_stems(request, spec)
            if spec.kind == "class" and spec.name.lower() not in self.separator.classes:
                known = ", ".join(self.separator.classes)
                raise WebError(400, f"unknown class {spec.name!r}; this model knows: {known}")
            if spec.kind == "clips":
                if not spec.clips:
                    raise WebError(400, "no query clips: upload one or more clips first")
                missing = [c for c in spec.clips if c not in session.clips]
                if missing:
                    raise WebError(404, "a query clip is not in this session (removed?)")
            if spec.kind == "range":
                if not 0 <= spec.start < spec.end:
                    raise WebError(400, "the region must start before it ends; drag again")
                if spec.start >= song.seconds:
                    raise WebError(
                        400,
                        f"the region starts at {spec.start:.2f} s, after the song's end "
                        f"({song.seconds:.2f} s)",
                    )
        if not 0 <= request.refine <= MAX_REFINE:
            raise WebError(400, f"refine steps must be 0 to {MAX_REFINE}, got {request.refine}")

    def _check_stems(self, request: Request, spec: QuerySpec) -> None:
        """Every stem at once: the first query only, no slider, no refinement."""
        if spec is not request.query:
            raise WebError(400, "every stem at once cannot be a slider's end; choose one sound")
        if request.other is not None:
            raise WebError(
                400, "every stem at once has no slider: choose nothing under 'Slide towards'"
            )
        if request.refine:
            raise WebError(400, "every stem at once is not refined: set refine steps to 0")
        if len(self.separator.coarse_classes) < 2:
            raise WebError(400, "this model stores no set of stems that make up a song")

    def submit(self, session: Session, request: Request, *, background: bool = False) -> Job:
        """A job for ``request``: done at once if its result is cached, the same job if one for
        it is already queued or running, else a new queued job."""
        self.check_request(session, request)
        key = request.key()
        with self.lock:
            cached = session.results.get(key)
            if cached is not None:
                job = Job(new_id(), session.id, request, background, state="done", progress=1.0)
                job.stage, job.result, job.cached = "done", cached, True
                session.jobs[job.id] = job
                return job
            for job in session.jobs.values():
                if job.active and job.request.key() == key:
                    if job.background and not background:  # the user wants it now
                        job.background = False
                        if job in self.queue:
                            self.queue.remove(job)
                            self.queue.insert(0, job)
                    return job
            if sum(j.active for j in session.jobs.values()) >= self.max_queued:
                raise WebError(429, "too many separations waiting; cancel some or wait")
            job = Job(new_id(), session.id, request, background)
            session.jobs[job.id] = job
            self.queue.append(job)
            self.wake.notify_all()
            return job

    def job(self, session: Session, job_id: str) -> Job:
        job = session.jobs.get(job_id)
        if job is None:
            raise WebError(404, "no such job in this session")
        return job

    def cancel(self, session: Session, job_id: str) -> Job:
        """Cancel a job and the session's slider precomputation waiting behind it."""
        with self.lock:
            job = self.job(session, job_id)
            self._cancel(job)
            for other in session.jobs.values():
                if other.background:
                    self._cancel(other)
            return job

    def _cancel(self, job: Job) -> None:
        job.cancel.set()
        if job.state == "queued":
            if job in self.queue:
                self.queue.remove(job)
            job.state, job.stage = "cancelled", "cancelled"

    def _next(self) -> Job | None:
        for background in (False, True):
            for job in self.queue:
                if job.background == background:
                    self.queue.remove(job)
                    return job
        return None

    def _work(self) -> None:
        swept = time.monotonic()
        while True:
            job: Job | None = None
            session: Session | None = None
            with self.lock:
                if not self.queue and not self.stopping:
                    self.wake.wait(timeout=30.0)
                if self.stopping:
                    return
                job = self._next()
                if job is not None:
                    session = self.sessions.get(job.session)
                    if session is None or job.cancel.is_set():
                        job.state, job.stage = "cancelled", "cancelled"
                    else:
                        job.state, job.stage = "running", "starting"
            if job is not None and session is not None and job.state == "running":
                self._run(session, job)
            if time.monotonic() - swept > 30.0:
                self._expire()
                swept = time.monotonic()

    def _run(self, session: Session, job: Job) -> None:
        folder = session.folder / "results" / new_id()
        began = time.perf_counter()
        try:
            files = self._separate(session, job, folder)
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            with self.lock:
                job.state, job.stage = "cancelled", "cancelled"
            return
        except AqsepError as err:
            shutil.rmtree(folder, ignore_errors=True)
            with self.lock:
                job.state, job.stage = "error", "failed"
                job.error = self.clean(str(err), session)
            return
        except Exception as err:  # a bug: the page gets one line, the server's log the trace
            log.exception("job %s failed", job.id)
            shutil.rmtree(folder, ignore_errors=True)
            with self.lock:
                job.state, job.stage = "error", "failed"
                job.error = f"internal error ({type(err).__name__}); the server's log has details"
            return
        result = Result(new_id(), job.request, folder, files, time.perf_counter() - began)
        with self.lock:
            current = self.sessions.get(session.id) is session and session.song is not None
            if not current or session.song is None or session.song.id != job.request.song:
                shutil.rmtree(folder, ignore_errors=True)  # the song was closed meanwhile
                job.state, job.stage = "cancelled", "cancelled"
                return
            session.results[job.request.key()] = result
            job.result, job.progress = result, 1.0
            job.state, job.stage = "done", "done"
            ahead = not job.background and job.request.other is not None
        if ahead:
            self._precompute(session, job.request)

    def _precompute(self, session: Session, request: Request) -> None:
        """Queue the slider's other stops, behind anything the user asks for."""
        for alpha in self.blend_positions:
            position = request.at(alpha)
            with self.lock:
                if position.key() in session.results:
                    continue
            with contextlib.suppress(WebError):
                self.submit(session, position, background=True)

    def _latent(self, session: Session, song: Song, spec: QuerySpec) -> Query:
        """The separator's query for ``spec``, its latent made once per session (a range's once
        per song)."""
        key = (song.id, spec.key()) if spec.kind == "range" else spec.key()
        with self.lock:
            cached = session.latents.get(key)
        if cached is not None:
            return Query(latent=cached)
        if spec.kind == "range":
            query = Query(start=spec.start, end=spec.end)
        elif spec.kind == "clips":
            with self.lock:
                paths = [session.clips[c].path for c in spec.clips if c in session.clips]
            if len(paths) != len(spec.clips):
                raise QueryError("a query clip was removed while the separation waited")
            query = Query(clips=tuple(paths))
        else:
            query = Query(name=spec.name)
        z = self.separator.latent_of(query, song.path)
        with self.lock:
            session.latents[key] = z
        return Query(latent=z)

    def _separate(self, session: Session, job: Job, folder: Path) -> dict[str, Path]:
        request = job.request
        with self.lock:
            song = self.song(session, request.song)
        if request.query.kind == "stems":
            return self._separate_stems(job, song, folder)
        progress = _JobProgress(job)
        job.stage = "reading the query"
        query = replace(
            self._latent(session, song, request.query),
            towards=None if request.other is None else self._latent(session, song, request.other),
            alpha=request.alpha if request.other is not None else 0.0,
            refine=request.refine,
        )
        progress.check()
        out = self.separator.separate_file(
            song.path, folder, query, residual=True, progress=progress
        )
        self.separations += 1
        return {"target": out.outputs["target"], "rest": out.outputs["rest"]}

    def _separate_stems(self, job: Job, song: Song, folder: Path) -> dict[str, Path]:
        """Every coarse class of the model, one file each, in one pass over the song: the
        separator's default rule for several targets (ratio masks) makes them sum to the song."""
        sep = self.separator
        latents = {name: sep.class_latent(name) for name in sep.coarse_classes}
        job.stage = "separating every stem"
        out = sep.separate_file(song.path, folder, latents, progress=_JobProgress(job))
        self.separations += 1
        return dict(out.outputs)

    def zip_of(self, result: Result, fmt: str, names: dict[str, str]) -> Path:
        """Every file of ``result`` in one zip (stored: the audio hardly compresses), each named
        ``names[key]``; made once per format and kept beside them."""
        out = result.folder / f"all-{fmt}.zip"
        if out.exists():
            return out
        part = result.folder / f"{new_id()}.part"
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_STORED) as archive:
            for key, path in result.files.items():
                archive.write(self.download(path, fmt), names[key])
        part.replace(out)
        return out

    # ---- shutdown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker (the running job is cancelled) and remove every session's files."""
        with self.lock:
            self.stopping = True
            for session in self.sessions.values():
                for job in session.jobs.values():
                    self._cancel(job)
            self.wake.notify_all()
        self.worker.join(timeout=60.0)
        with self.lock:
            self.sessions.clear()
        shutil.rmtree(self.root, ignore_errors=True)

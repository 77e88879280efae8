"""The web page's server: a FastAPI app over one :class:`aqsep.Separator`.

Every request but the page and its static files names its session in the ``X-Session`` header
(one session per browser tab, made by ``POST /api/session``). Uploads are the raw request body,
counted against the size limit while they arrive and typed by their first bytes. Errors are
JSON ``{"error": "one line"}``, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

import aqsep
from aqsep.api import Separator
from aqsep.errors import AqsepError
from aqsep.web.jobs import (
    MAX_REFINE,
    QuerySpec,
    Result,
    Session,
    Song,
    WebError,
    Workshop,
    display_name,
    one_line,
)
from aqsep.web.jobs import Request as Separation
from aqsep.web.media import SNIFF_BYTES, overview, sniff_audio

log = logging.getLogger("aqsep.web")

STATIC = Path(__file__).parent / "static"
EXAMPLE_SONG = Path(aqsep.__file__).parent / "examples" / "mixture.wav"
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
ACCEPTED = "wav, flac, ogg, mp3, aiff, m4a or aac"

# The page loads nothing from anywhere but this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class QueryIn(BaseModel):
    kind: Literal["range", "clips", "class", "stems"]
    start: float = 0.0
    end: float = 0.0
    clips: list[str] = Field(default_factory=list, max_length=64)
    name: str = Field(default="", max_length=64)

    def spec(self) -> QuerySpec:
        return QuerySpec(self.kind, self.start, self.end, tuple(self.clips), self.name)


class JobIn(BaseModel):
    song: str = Field(max_length=64)
    query: QueryIn
    other: QueryIn | None = None
    alpha: float = Field(default=0.0, ge=0.0, le=1.0)
    refine: int = Field(default=0, ge=0, le=MAX_REFINE)

    def request(self) -> Separation:
        other = None if self.other is None else self.other.spec()
        return Separation(self.song, self.query.spec(), other, self.alpha, self.refine)


class View(BaseModel):
    """The part of a file a picture shows: ``columns`` across seconds ``start`` to ``end`` (the
    whole file by default), its brightest level ``top_db`` (default: its loudest)."""

    columns: int = Field(default=1000, ge=16, le=4000)
    start: float = Field(default=0.0, ge=0.0)
    end: float | None = Field(default=None, gt=0.0)
    top_db: float | None = Field(default=None, ge=-400.0, le=400.0)

    def of(self, path: Path) -> dict:
        if self.end is not None and self.end <= self.start:
            raise WebError(400, f"a view must end after it starts ({self.start} s)")
        return overview(
            path, columns=self.columns, start=self.start, end=self.end, top_db=self.top_db
        )


class EndIn(BaseModel):
    session: str = Field(max_length=64)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _same_origin(request: Request) -> bool:
    """No ``Origin`` header (not a browser's cross-site request), or the page's own origin: the
    scheme and the ``Host`` the request was sent to."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return bool(host) and origin.lower() == f"{request.url.scheme}://{host}".lower()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status)


@contextlib.contextmanager
def _guard(workshop: Workshop, session: Session) -> Iterator[None]:
    """Library errors as one-line page errors, with the server's paths taken out."""
    try:
        yield
    except AqsepError as err:
        raise WebError(400, workshop.clean(str(err), session)) from None


async def _receive(request: Request, path: Path, limit: int) -> str:
    """Write the request body to ``path`` (at most ``limit`` bytes); the audio type it holds."""
    declared = request.headers.get("content-length")
    too_big = f"the file is larger than the upload limit of {limit / 1e6:g} MB"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise WebError(413, too_big)
    size, head = 0, b""
    with open(path, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WebError(413, too_big)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            out.write(chunk)
    if size == 0:
        raise WebError(400, "the upload is empty: choose an audio file")
    kind = sniff_audio(head)
    if kind is None:
        raise WebError(415, f"not an audio file by its content; accepted: {ACCEPTED}")
    return kind


def create_app(
    separator: Separator | None = None,
    *,
    model: str | None = None,
    max_upload: int = 200 * 1000 * 1000,
    session_ttl: float = 2 * 3600.0,
    blend_positions: int = 5,
    allowed_hosts: list[str] | None = None,
    temp_root: Path | None = None,
    max_sessions: int = 64,
) -> FastAPI:
    """The web app. ``separator`` (or a :class:`Separator` on ``model``) serves every session;
    session files live in a temporary folder made at start-up and removed at shutdown.

    Args:
        allowed_hosts: ``Host`` header values accepted (default: localhost names only, which
            keeps other web sites from reaching a local server through DNS rebinding).
        max_sessions: browser tabs served at once (each holds a temporary folder).

    A call that changes state (any method but GET, HEAD and OPTIONS) from a page of another
    origin (its ``Origin`` header) is refused with 403.
    """
    state: dict[str, Workshop] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sep = separator if separator is not None else Separator(model)
        state["workshop"] = Workshop(
            sep,
            root=temp_root,
            max_upload=max_upload,
            session_ttl=session_ttl,
            blend_positions=blend_positions,
            max_sessions=max_sessions,
        )
        app.state.workshop = state["workshop"]
        try:
            yield
        finally:
            state.pop("workshop").close()

    app = FastAPI(
        title="aqsep", version=aqsep.__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOCAL_HOSTS)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.method not in SAFE_METHODS and not _same_origin(request):
            # a page of another web site may post to a local server (the browser lets the
            # request go and only hides the answer): nothing that changes state is done for it
            return _error(403, "requests from another web site are refused")
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(WebError)
    async def web_error(request: Request, err: WebError) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(AqsepError)
    async def aqsep_error(request: Request, err: AqsepError) -> JSONResponse:
        workshop = state.get("workshop")
        text = str(err) if workshop is None else str(err).replace(str(workshop.root), "")
        return _error(400, text)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        return _error(422, f"bad request: {where + ': ' if where else ''}{first.get('msg', '')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return _error(500, f"internal error ({type(err).__name__}); the server's log has details")

    def workshop() -> Workshop:
        return state["workshop"]

    def session_of(request: Request) -> Session:
        return workshop().session(request.headers.get("x-session"))

    # ---- the page --------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---- sessions --------------------------------------------------------------------------
    @app.post("/api/session")
    def open_session() -> dict:
        ws = workshop()
        session = ws.new_session()
        released = ws.separator.released
        name = released.path.name if released.path is not None else "in-memory model"
        return {
            "session": session.id,
            "classes": ws.separator.classes,
            "model": name,
            "max_upload": ws.max_upload,
            "max_refine": MAX_REFINE,
            "max_clips": ws.max_clips,
            "blend_positions": ws.blend_positions,
            "example": EXAMPLE_SONG.is_file(),
            "stems": ws.separator.coarse_classes,
        }

    @app.post("/api/session/end", status_code=204)
    def end_session(body: EndIn) -> Response:
        workshop().end_session(body.session)
        return Response(status_code=204)

    # ---- the song --------------------------------------------------------------------------
    @app.post("/api/song")
    async def upload_song(request: Request) -> dict:
        ws, session = workshop(), session_of(request)
        upload = ws.incoming(session)
        try:
            kind = await _receive(request, upload, ws.max_upload)
            name = display_name(unquote(request.headers.get("x-filename", "")), "song")
            song = await run_in_threadpool(ws.open_song, session, upload, kind, name)
        finally:
            ws.discard(upload)
        return song.public()

    @app.post("/api/song/example")
    def example_song(request: Request) -> dict:
        ws, session = workshop(), session_of(request)
        if not EXAMPLE_SONG.is_file():
            raise WebError(404, "this installation has no bundled example")
        upload = ws.incoming(session)
        try:
            shutil.copyfile(EXAMPLE_SONG, upload)
            return ws.open_song(session, upload, "wav", "mixture.wav (bundled example)").public()
        finally:
            ws.discard(upload)

    @app.get("/api/song/{song_id}")
    def song_info(song_id: str, request: Request) -> dict:
        ws, session = workshop(), session_of(request)
        return ws.song(session, song_id).public()

    @app.get("/api/song/{song_id}/overview")
    def song_overview(song_id: str, request: Request, view: View = Depends()) -> dict:  # noqa: B008
        ws, session = workshop(), session_of(request)
        song = ws.song(session, song_id)
        with _guard(ws, session):
            return view.of(song.path)

    @app.get("/api/song/{song_id}/audio")
    def song_audio(song_id: str, request: Request, format: Literal["wav", "flac"] = "wav"):  # noqa: A002
        ws, session = workshop(), session_of(request)
        song = ws.song(session, song_id)
        with _guard(ws, session):
            path = ws.download(ws.mixture_wav(session, song), format)
        return _audio_file(path, f"{_stem(song.name)}-mixture.{format}")

    # ---- query clips -----------------------------------------------------------------------
    @app.get("/api/clips")
    def list_clips(request: Request) -> list[dict]:
        return [c.public() for c in session_of(request).clips.values()]

    @app.post("/api/clips")
    async def upload_clip(request: Request) -> dict:
        ws, session = workshop(), session_of(request)
        upload = ws.incoming(session)
        try:
            kind = await _receive(request, upload, ws.max_upload)
            name = display_name(unquote(request.headers.get("x-filename", "")), "clip")
            clip = await run_in_threadpool(ws.add_clip, session, upload, kind, name)
        finally:
            ws.discard(upload)
        return clip.public()

    @app.get("/api/clips/{clip_id}/audio")
    def clip_audio(clip_id: str, request: Request) -> FileResponse:
        """The clip as 16-bit WAV (what every browser plays), to hear it before separating."""
        ws, session = workshop(), session_of(request)
        with _guard(ws, session):
            path, name = ws.clip_wav(session, clip_id)
        return _audio_file(path, f"{_stem(name)}.wav")

    @app.delete("/api/clips/{clip_id}", status_code=204)
    def remove_clip(clip_id: str, request: Request) -> Response:
        workshop().remove_clip(session_of(request), clip_id)
        return Response(status_code=204)

    # ---- separation jobs -------------------------------------------------------------------
    @app.post("/api/jobs")
    def submit(body: JobIn, request: Request) -> dict:
        ws, session = workshop(), session_of(request)
        return ws.submit(session, body.request()).public()

    @app.get("/api/jobs")
    def list_jobs(request: Request) -> list[dict]:
        session = session_of(request)
        with workshop().lock:
            return [j.public() for j in session.jobs.values()]

    @app.get("/api/jobs/{job_id}")
    def job_state(job_id: str, request: Request) -> dict:
        ws, session = workshop(), session_of(request)
        with ws.lock:
            return ws.job(session, job_id).public()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str, request: Request) -> dict:
        ws, session = workshop(), session_of(request)
        return ws.cancel(session, job_id).public()

    # ---- results ---------------------------------------------------------------------------
    def result_file(session: Session, result_id: str, stem: str) -> tuple[Path, str]:
        """The file of ``stem`` (``mixture`` or one of the result's files) and its download
        name without the extension."""
        ws = workshop()
        with ws.lock:
            result = session.result(result_id)
            song = ws.song(session, result.request.song)
        if stem == "mixture":
            with _guard(ws, session):
                return ws.mixture_wav(session, song), f"{_stem(song.name)}-mixture"
        if stem not in result.files:
            raise WebError(404, f"this result has no {stem!r}; it has {', '.join(result.files)}")
        return result.files[stem], _file_name(song, result, stem)

    @app.get("/api/results/{result_id}/all.zip")
    def result_zip(
        result_id: str,
        request: Request,
        format: Literal["wav", "flac"] = "wav",  # noqa: A002
    ) -> FileResponse:
        ws, session = workshop(), session_of(request)
        with ws.lock:
            result = session.result(result_id)
            song = ws.song(session, result.request.song)
        names = {key: f"{_file_name(song, result, key)}.{format}" for key in result.files}
        with _guard(ws, session):
            path = ws.zip_of(result, format, names)
        base = _stem(song.name) + ("-stems" if result.stems else f"-{_query_name(result.request)}")
        return FileResponse(path, media_type="application/zip", filename=f"{base}.zip")

    @app.get("/api/results/{result_id}/{stem}")
    def result_audio(
        result_id: str,
        stem: str,
        request: Request,
        format: Literal["wav", "flac"] = "wav",  # noqa: A002
    ) -> FileResponse:
        ws, session = workshop(), session_of(request)
        path, name = result_file(session, result_id, stem)
        with _guard(ws, session):
            path = ws.download(path, format)
        return _audio_file(path, f"{name}.{format}")

    @app.get("/api/results/{result_id}/{stem}/overview")
    def result_overview(
        result_id: str,
        stem: str,
        request: Request,
        view: View = Depends(),  # noqa: B008
    ) -> dict:
        ws, session = workshop(), session_of(request)
        path, _ = result_file(session, result_id, stem)
        with _guard(ws, session):
            return view.of(path)

    return app


def _stem(name: str) -> str:
    base = name.rsplit(".", 1)[0] if "." in name else name
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in base).strip("_")
    return safe[:60] or "song"


def _spec_name(spec: QuerySpec) -> str:
    if spec.kind == "range":
        return f"region-{spec.start:.2f}-{spec.end:.2f}s"
    if spec.kind == "clips":
        return f"{len(spec.clips)}clip{'s' if len(spec.clips) != 1 else ''}"
    return _stem(spec.name)


def _query_name(request: Separation) -> str:
    """Which query made a result, for its download name: ``vocals``, ``region-5.00-8.00s``,
    ``vocals-to-drums-0.25``, with ``-refine2`` after two refinement steps."""
    name = _spec_name(request.query)
    if request.other is not None:
        name += f"-to-{_spec_name(request.other)}-{request.alpha:.2f}"
    if request.refine:
        name += f"-refine{request.refine}"
    return name


def _file_name(song: Song, result: Result, key: str) -> str:
    """A result file's download name without its extension: the song, then the query and what
    the file is (``mixture-vocals-estimate``, ``mixture-drums-rest``), or the stem
    (``mixture-bass``) of every stem at once."""
    if result.stems:
        return f"{_stem(song.name)}-{_stem(key)}"
    what = "estimate" if key == "target" else key
    return f"{_stem(song.name)}-{_query_name(result.request)}-{what}"


def _audio_file(path: Path, filename: str) -> FileResponse:
    media = "audio/flac" if path.suffix == ".flac" else "audio/wav"
    return FileResponse(path, media_type=media, filename=filename)

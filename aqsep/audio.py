"""Reading, writing, resampling and channel handling for audio files.

Arrays are ``(channels, samples)`` float32 everywhere in aqsep. Files are read through
libsndfile (``soundfile``: WAV, FLAC, OGG, MP3, AIFF, ...); what libsndfile does not recognise
(MP4/M4A/AAC, MUSDB18 stems, ...) is decoded with PyAV (``av``, a dependency). Writes are
atomic: a temporary file in the destination folder, renamed over the final name only once
complete; a failed write leaves neither the file nor a folder it created.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import soundfile as sf
import soxr

from aqsep.errors import AudioError, OutputError

AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".mp3",
    ".aiff",
    ".aif",
    ".opus",
    ".m4a",
    ".mp4",
    ".aac",
)
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
BYTES_PER_SAMPLE = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}
FORMATS = ("wav", "flac")
FLAC_MAX_CHANNELS = 8  # the FLAC format's own limit
# The most audio bytes a plain WAV file holds: its sizes are 32-bit (4 GiB), less room for the
# header. Longer outputs are written as RF64, the WAV with 64-bit sizes (EBU Tech 3306), which
# libsndfile (aqsep included) and most audio tools read.
WAV_MAX_DATA_BYTES = 2**32 - 2**16
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64  # more "channels" than this means the array is (samples, channels)
# The largest sample magnitude accepted (full scale is 1): 80 dB above full scale, which no
# recording reaches, while sums of squares of a long STFT window of such samples stay far from
# float32's limit (3.4e38); larger values would overflow the transform into inf and NaN.
MAX_SAMPLE_MAGNITUDE = 1e4


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@contextlib.contextmanager
def _decoder_chatter_silenced() -> Iterator[None]:
    """Keep libsndfile's decoders (libmpg123 prints "Note: ..." and "warning: ..." lines) off the
    terminal: their notes would add lines to aqsep's one-line errors. Only file descriptor 2 is
    redirected, for the duration of one libsndfile call, and restored afterwards."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(
            f"{path}: not a regular file (a pipe or a device?): aqsep reads audio from files, "
            "which it seeks in; save the stream to a file first"
        )
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _check_info(path: Path, sample_rate: int, channels: int, frames: int) -> None:
    if frames <= 0:
        raise AudioError(f"{path}: holds no audio (zero-length)")
    if channels <= 0:
        raise AudioError(f"{path}: has no channels")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: unsupported sample rate {sample_rate} Hz")


def check_samples(audio: np.ndarray, where: str) -> None:
    """Refuse NaN or Inf samples, and samples beyond :data:`MAX_SAMPLE_MAGNITUDE`: they would
    silently poison every chunk they touch (huge finite ones overflow the STFT)."""
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise AudioError(
            f"{where}: contains {bad} NaN or infinite samples; fix or re-export the file"
        )
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > MAX_SAMPLE_MAGNITUDE:
        bad = int((np.abs(audio) > MAX_SAMPLE_MAGNITUDE).sum())
        raise AudioError(
            f"{where}: {bad} samples are beyond +-{MAX_SAMPLE_MAGNITUDE:g} (the largest is "
            f"{peak:.3g}; full scale is 1): not a recording's values; fix or re-export the file"
        )


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels and length of a file, without decoding it all."""
    path = Path(path)
    _check_exists(path)
    try:
        with _decoder_chatter_silenced():
            info = sf.info(str(path))
        sr, ch, frames = int(info.samplerate), int(info.channels), int(info.frames)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        audio, sr = _read_with_av(path)
        ch, frames = audio.shape
    _check_info(path, sr, ch, frames)
    return AudioInfo(path, sr, ch, frames)


def _read_with_av(path: Path, stream: int = 0) -> tuple[np.ndarray, int]:
    """Decode a container libsndfile does not read (MP4/M4A/AAC, ...) with PyAV."""
    try:
        import av
    except ImportError:  # a dependency of aqsep, so only a broken installation gets here
        raise AudioError(
            f"{path}: not a format libsndfile reads (wav, flac, ogg, mp3, aiff), and PyAV, which "
            "aqsep uses for mp4/m4a/aac and other formats, is not installed: reinstall aqsep "
            "(or `pip install av`)"
        ) from None
    try:
        with av.open(str(path)) as container:
            audio_streams = container.streams.audio
            if not audio_streams:
                raise AudioError(f"{path}: has no audio stream")
            st = audio_streams[stream]
            sr = int(st.rate)
            blocks = []
            for frame in container.decode(st):
                arr: np.ndarray = frame.to_ndarray()
                if arr.ndim == 1 or frame.format.is_packed:
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                if np.issubdtype(arr.dtype, np.signedinteger):  # PCM/ALAC decode to integers
                    arr = arr / -float(np.iinfo(arr.dtype).min)
                elif np.issubdtype(arr.dtype, np.unsignedinteger):
                    half = (np.iinfo(arr.dtype).max + 1) / 2
                    arr = (arr - half) / half
                blocks.append(arr.astype(np.float32))
    except AudioError:
        raise
    except Exception as err:  # PyAV raises many error types for broken input
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise AudioError(f"{path}: not audio, or corrupt: cannot be decoded ({reason})") from None
    if not blocks:
        raise AudioError(f"{path}: holds no audio (zero-length)")
    audio = np.concatenate(blocks, axis=1)
    return np.ascontiguousarray(audio, dtype=np.float32), sr


def _libsndfile_reason(err: Exception) -> str:
    """libsndfile's own words, when they add something: its "Error opening ...: File does not
    exist or is not a regular file" for a file that exists only misleads."""
    text = str(err)
    if "does not exist or is not a regular file" in text:
        return ""
    return f": {text}"


def read_audio(path: str | Path, *, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Read a file (or ``frames`` samples from ``start``) as ``(channels, samples)`` float32."""
    path = Path(path)
    _check_exists(path)
    try:
        with _decoder_chatter_silenced():
            data, sr = sf.read(
                str(path), start=start, frames=frames, dtype="float32", always_2d=True
            )
        audio = data.T
    except sf.LibsndfileError as err:
        if "Format not recognised" in str(err) or "unknown format" in str(err).lower():
            audio, sr = _read_with_av(path)
            stop = None if frames < 0 else start + frames
            audio = audio[:, start:stop]
        else:
            raise AudioError(
                f"{path}: cannot be read (truncated, corrupt or not audio){_libsndfile_reason(err)}"
            ) from None
    except RuntimeError as err:
        raise AudioError(f"{path}: cannot be read (truncated or corrupt?): {err}") from None
    _check_info(
        path, int(sr), audio.shape[0], audio.shape[1] if start == 0 else max(audio.shape[1], 1)
    )
    check_samples(audio, str(path))
    return np.ascontiguousarray(audio), int(sr)


class AudioReader:
    """Reads blocks of a file (or an in-memory array) by sample position, zero-padded past the end.

    Keeps at most one block in memory, so a 60-minute file costs no more than a 30-second one
    (formats that libsndfile cannot seek in are decoded whole once).
    """

    def __init__(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> None:
        self._file: sf.SoundFile | None = None
        self._array: np.ndarray | None = None
        if isinstance(source, np.ndarray):
            if sample_rate is None:
                raise ValueError("sample_rate is required for array input")
            self._array = as_2d(source)
            self.sample_rate = int(sample_rate)
            self.channels, self.frames = self._array.shape
            self.name = "<array>"
            _check_info(Path(self.name), self.sample_rate, self.channels, self.frames)
            check_samples(self._array, "input audio")
            return
        path = Path(source)
        self.name = str(path)
        _check_exists(path)
        try:
            with _decoder_chatter_silenced():
                self._file = sf.SoundFile(str(path))
            self.sample_rate, self.channels, self.frames = (
                int(self._file.samplerate),
                int(self._file.channels),
                int(self._file.frames),
            )
            if not self._file.seekable():
                raise sf.LibsndfileError(0, "not seekable")
        except (sf.LibsndfileError, RuntimeError, TypeError):
            if self._file is not None:
                self._file.close()
                self._file = None
            self._array, self.sample_rate = read_audio(path)
            self.channels, self.frames = self._array.shape
        _check_info(path, self.sample_rate, self.channels, self.frames)

    def read(self, start: int, length: int) -> np.ndarray:
        """``(channels, length)`` float32 from sample ``start``; zeros outside the file."""
        out = np.zeros((self.channels, length), dtype=np.float32)
        lo, hi = max(start, 0), min(start + length, self.frames)
        if hi <= lo:
            return out
        if self._array is not None:
            out[:, lo - start : hi - start] = self._array[:, lo:hi]
        else:
            assert self._file is not None
            try:
                with _decoder_chatter_silenced():
                    self._file.seek(lo)
                    block = self._file.read(hi - lo, dtype="float32", always_2d=True).T
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(
                    f"{self.name}: read failed at sample {lo} (truncated or corrupt?): {err}"
                ) from None
            if block.shape[1] < hi - lo:  # the header promised more audio than the file holds
                raise AudioError(
                    f"{self.name}: audio stops at {(lo + block.shape[1]) / self.sample_rate:.2f} s of the "
                    f"{self.frames / self.sample_rate:.2f} s its header announces: the file is truncated or "
                    "corrupt; re-download or re-export it"
                )
            out[:, lo - start : hi - start] = block
        check_samples(out, f"{self.name} (samples {lo}..{hi})")
        return out

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, size):
            yield self.read(start, min(size, self.frames - start))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@overload
def rms_db(x: np.ndarray, axis: None = None) -> float: ...
@overload
def rms_db(x: np.ndarray, axis: int) -> np.ndarray: ...
def rms_db(x: np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """RMS level in dBFS (a floor of -200 dB for digital silence): of all the samples of ``x``,
    or along ``axis`` (``axis=-1``: one level per window of ``(..., samples)``)."""
    power = np.mean(np.square(x, dtype=np.float64), axis=axis)
    if axis is None:
        return 10.0 * math.log10(float(power) + 1e-20)
    return 10.0 * np.log10(power + 1e-20)


def to_float(audio: np.ndarray) -> np.ndarray:
    """Samples as float32 in the usual full scale [-1, 1].

    Integer arrays are PCM: signed ones are divided by ``2 ** (bits - 1)`` (int16 32767 -> ~1.0),
    unsigned ones centred first (uint8 128 -> 0.0). Float arrays keep their values. Anything
    else (bool, complex, text, objects) is refused. The caller's array is never modified.
    """
    audio = np.asarray(audio)
    kind = audio.dtype.kind
    if kind == "f":
        return audio.astype(np.float32, copy=False)
    if kind == "i":
        return (audio / -float(np.iinfo(audio.dtype).min)).astype(np.float32)
    if kind == "u":
        half = (float(np.iinfo(audio.dtype).max) + 1.0) / 2.0
        return ((audio - half) / half).astype(np.float32)
    raise AudioError(
        f"audio samples must be floats or integer PCM, got an array of dtype {audio.dtype}"
    )


def as_2d(audio: np.ndarray) -> np.ndarray:
    """``(samples,)`` or ``(channels, samples)`` -> ``(channels, samples)`` float32 (a copy if needed).

    Integer PCM is scaled to [-1, 1] (see :func:`to_float`).
    """
    audio = to_float(audio)
    if audio.ndim == 1:
        return audio[None, :]
    if audio.ndim != 2:
        raise AudioError(
            f"audio must be (samples,) or (channels, samples), got shape {audio.shape}"
        )
    if audio.shape[0] > max(audio.shape[1], MAX_CHANNELS):
        raise AudioError(
            f"audio of shape {audio.shape} looks like (samples, channels); pass (channels, samples)"
        )
    return audio


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` -> ``(samples,)``, the mean of the channels."""
    return audio.mean(axis=0) if audio.shape[0] > 1 else audio[0]


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``(..., samples)`` float32 with soxr (high quality); a no-op at equal rates."""
    if sr_in == sr_out:
        return audio
    shape = audio.shape
    flat = audio.reshape(-1, shape[-1]).T  # soxr wants (samples, channels)
    out = soxr.resample(np.ascontiguousarray(flat), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out.T.reshape(*shape[:-1], -1), dtype=np.float32)


_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_stale_temps(path: Path) -> int:
    """Remove temporary files that writers of ``path`` left behind when killed on this machine.

    A temporary name holds the host and process id of its writer; it is stale when that process
    no longer runs. Temporaries of running writers (a concurrent run) are left alone.
    """
    if os.name != "posix":  # no cheap, safe liveness check: leave them (they are hidden files)
        return 0
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_HOST}-(\d+)-\w+\.part")
    removed = 0
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed += 1
    return removed


def output_bits(bits: str | int) -> str:
    """The sample format of an output: ``"16"``, ``"24"`` (also as ints) or ``"32f"`` (float)."""
    text = str(bits) if isinstance(bits, int) and not isinstance(bits, bool) else bits
    if not isinstance(text, str) or text not in SUBTYPES:
        raise OutputError(
            f"unsupported sample format {bits!r}; choose 16 or 24 (integer bits) or '32f' (float)"
        )
    return text


def _mount_point(folder: Path) -> Path:
    path = folder.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


DISK_NEARLY_FULL = 1 << 20  # bytes: less free space than this after a failed write means "full"


def write_failure(path: Path, err: BaseException) -> str:
    """Why writing ``path`` failed, naming the full disk when that is the cause.

    libsndfile reports a full disk as "System error.", so the free space of the file system
    holding ``path`` is looked at as well as the error number.
    """
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    no_space = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if no_space or (free is not None and free < DISK_NEARLY_FULL):
        left = "" if free is None else f", {_size(free)} free"
        reason = f": {err.strerror}" if isinstance(err, OSError) and err.strerror else ""
        return (
            f"writing {path} failed: disk full (the file system mounted at "
            f"{_mount_point(folder)}{left}){reason}; free some space or write elsewhere"
        )
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return f"writing {path} failed: {reason}"


class AtomicAudioWriter:
    """Write an audio file block by block; it appears under its final name only when complete.

    Use as a context manager: on any error (full disk, interruption) the temporary file is
    removed, nothing is left under the final name, and the folders this writer created for the
    file are removed again if they are empty. The file gets the permissions of any new file of
    the process (``0o666`` less the umask).

    Args:
        path: the final file name.
        sample_rate, channels: of the audio to write.
        bits: ``"16"`` or ``"24"`` (integer PCM, also as ints) or ``"32f"`` (float).
        fmt: ``"wav"`` or ``"flac"``; default: from the suffix of ``path``, else wav.
        frames: how many samples (per channel) will be written, if known. A WAV whose audio
            will pass :data:`WAV_MAX_DATA_BYTES` (4 GiB) is written as RF64; without ``frames``
            a WAV that grows past it is refused (:class:`OutputError`) rather than written with
            sizes that every reader would misread.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        channels: int,
        *,
        bits: str | int = "16",
        fmt: str | None = None,
        frames: int | None = None,
    ) -> None:
        self.path = Path(path)
        bits = output_bits(bits)
        fmt = (fmt or self.path.suffix.lstrip(".") or "wav").lower()
        if fmt not in FORMATS:
            raise OutputError(f"unsupported output format {fmt!r}; choose wav or flac")
        if fmt == "flac" and bits == "32f":
            raise OutputError("FLAC cannot store float samples; use 16 or 24 bits, or wav")
        if fmt == "flac" and channels > FLAC_MAX_CHANNELS:
            raise OutputError(
                f"{self.path}: FLAC holds at most {FLAC_MAX_CHANNELS} channels and this audio has "
                f"{channels}; write wav"
            )
        self.sample_rate, self.channels, self.subtype, self.format = (
            sample_rate,
            channels,
            SUBTYPES[bits],
            fmt.upper(),
        )
        self._frame_bytes = channels * BYTES_PER_SAMPLE[self.subtype]
        if self.format == "WAV" and frames is not None:
            if frames * self._frame_bytes > WAV_MAX_DATA_BYTES:
                self.format = "RF64"
        self.written = 0  # samples per channel
        self.clipped = 0
        self._tmp: Path | None = None
        self._file: sf.SoundFile | None = None
        self._made: list[Path] = []  # folders this writer created, deepest first

    def _make_folders(self) -> None:
        missing, folder = [], self.path.parent
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            self._made.insert(0, d)

    def _remove_made_folders(self) -> None:
        for d in self._made:
            try:
                d.rmdir()
            except OSError:  # not empty (another writer's file, a user's file): keep it
                break
        self._made = []

    def _create_temporary(self) -> Path:
        # O_EXCL with mode 0o666: a unique name, and the process umask applies as to any new file
        prefix = f".{self.path.name}.{_HOST}-{os.getpid()}-"
        for _ in range(100):
            tmp = self.path.parent / f"{prefix}{secrets.token_hex(4)}.part"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            os.close(fd)
            return tmp
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(self.path.parent))

    def __enter__(self) -> AtomicAudioWriter:
        try:
            self._make_folders()
            remove_stale_temps(self.path)
            self._tmp = self._create_temporary()
        except OSError as err:
            self._remove_made_folders()
            raise OutputError(
                f"cannot write to {self.path.parent}: {err.strerror or err}"
            ) from None
        try:
            self._file = sf.SoundFile(
                str(self._tmp),
                "w",
                samplerate=self.sample_rate,
                channels=self.channels,
                subtype=self.subtype,
                format=self.format,
            )
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            self._tmp.unlink(missing_ok=True)
            self._remove_made_folders()
            raise OutputError(f"cannot write {self.path}: {err}") from None
        return self

    def write(self, block: np.ndarray) -> None:
        """Append ``(channels, samples)``; integer formats clamp to [-1, 1] and count clipped samples."""
        assert self._file is not None, "use AtomicAudioWriter as a context manager"
        if self.format == "WAV" and (self.written + block.shape[-1]) * self._frame_bytes > (
            WAV_MAX_DATA_BYTES
        ):
            raise OutputError(
                f"{self.path}: the audio passes 4 GiB, more than a WAV file holds; write FLAC, "
                "or give the writer the length so that it writes RF64"
            )
        self.written += block.shape[-1]
        if self.subtype != "FLOAT":
            over = np.abs(block) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                block = np.clip(block, -1.0, 1.0)
        try:
            self._file.write(np.ascontiguousarray(block.T))
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise OutputError(write_failure(self.path, err)) from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._file is not None and self._tmp is not None
        failure: OutputError | None = None
        try:
            self._file.close()
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            failure = OutputError(write_failure(self.path, err))
        if exc_type is None and failure is None:
            try:
                os.replace(self._tmp, self.path)
            except OSError as err:
                self._tmp.unlink(missing_ok=True)
                self._remove_made_folders()
                raise OutputError(f"cannot write {self.path}: {err.strerror or err}") from None
            return
        with contextlib.suppress(OSError):
            self._tmp.unlink()
        self._remove_made_folders()
        if exc_type is None and failure is not None:
            raise failure


def write_audio(
    path: str | Path,
    audio: np.ndarray,
    sample_rate: int,
    *,
    bits: str | int = "16",
    fmt: str | None = None,
) -> int:
    """Write ``(channels, samples)`` atomically; returns the number of clipped samples."""
    audio = as_2d(audio)
    with AtomicAudioWriter(
        path, sample_rate, audio.shape[0], bits=bits, fmt=fmt, frames=audio.shape[1]
    ) as w:
        w.write(audio)
    return w.clipped

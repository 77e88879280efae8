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
from typing import Any, overload

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
_WAV_SAMPLE_BYTES = {**BYTES_PER_SAMPLE, "PCM_U8": 1, "PCM_32": 4, "DOUBLE": 8}
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
        stream = AvStream(path)
        stream.close()
        sr, ch, frames = stream.sample_rate, stream.channels, stream.frames
    _check_info(path, sr, ch, frames)
    return AudioInfo(path, sr, ch, frames)


def _import_av(path: Path) -> Any:
    try:
        import av
    except ImportError:  # a dependency of aqsep, so only a broken installation gets here
        raise AudioError(
            f"{path}: not a format libsndfile reads (wav, flac, ogg, mp3, aiff), and PyAV, which "
            "aqsep uses for mp4/m4a/aac and other formats, is not installed: reinstall aqsep "
            "(or `pip install av`)"
        ) from None
    return av


def av_frame_samples(frame: Any) -> np.ndarray:
    """One decoded PyAV frame as ``(channels, samples)`` float32: the one conversion of every
    PyAV decoder of the package (files here, MUSDB18 stems in :mod:`aqsep.data.musdb`). Integer
    PCM is scaled as :func:`to_float` scales it (signed by ``2 ** (bits - 1)``, unsigned centred
    first), so full scale is 1 whichever reader decodes a file."""
    arr: np.ndarray = frame.to_ndarray()
    if arr.ndim == 1 or frame.format.is_packed:
        arr = arr.reshape(-1, len(frame.layout.channels)).T
    if np.issubdtype(arr.dtype, np.signedinteger):  # PCM/ALAC decode to integers
        arr = arr / -float(np.iinfo(arr.dtype).min)
    elif np.issubdtype(arr.dtype, np.unsignedinteger):
        half = (np.iinfo(arr.dtype).max + 1) / 2
        arr = (arr - half) / half
    return arr.astype(np.float32, copy=False)


# Samples in the audio streams of files decoded with PyAV, by (path, stream, size, mtime,
# inode): counting them means decoding the whole stream, done once per file and process.
_AV_LENGTHS: dict[tuple[str, int, int, int, int], int] = {}


class AvStream:
    """One audio stream of a file libsndfile does not read (MP4/M4A/AAC, ...), decoded with
    PyAV front to back, keeping only the samples a reader may still ask for.

    ``frames`` is the number of samples the decoder gives (container headers give only an
    estimate): a first pass decodes the stream to count them without keeping any. A read
    behind what is kept decodes again from the beginning and keeps more from then on, so
    reading forward in overlapping steps (as separation does) costs memory bounded by the
    step, never by the file's length.
    """

    #: seconds of audio kept behind the end of the last read, to begin with
    KEEP_SECONDS = 30.0

    def __init__(self, path: Path, stream: int = 0) -> None:
        self.path, self._index = path, stream
        self._av = _import_av(path)
        self._container: Any = None
        self._open()
        self._keep = max(1, round(self.KEEP_SECONDS * self.sample_rate))
        st = path.stat()
        key = (str(path.resolve()), stream, st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in _AV_LENGTHS:
            if len(_AV_LENGTHS) >= 4096:
                _AV_LENGTHS.clear()
            _AV_LENGTHS[key] = self._count()
        self.frames = _AV_LENGTHS[key]

    def _fail(self, err: Exception) -> AudioError:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        return AudioError(f"{self.path}: not audio, or corrupt: cannot be decoded ({reason})")

    def _open(self) -> None:
        """(Re)start decoding from the beginning; the first block sets rate and channels."""
        self.close()
        try:
            self._container = self._av.open(str(self.path))
            streams = self._container.streams.audio
            if not streams:
                raise AudioError(f"{self.path}: has no audio stream")
            frames = self._container.decode(streams[self._index])
            first = next(frames, None)
        except AudioError:
            self.close()
            raise
        except Exception as err:  # PyAV raises many error types for broken input
            self.close()
            raise self._fail(err) from None
        if first is None:
            self.close()
            raise AudioError(f"{self.path}: holds no audio (zero-length)")
        self.sample_rate = int(first.sample_rate)
        self._buf = av_frame_samples(first)
        self.channels = self._buf.shape[0]
        self._buf_start = 0  # position in the stream of self._buf[:, 0]
        self._decoded: Iterator[np.ndarray] | None = self._blocks(frames)

    def _blocks(self, frames: Iterator[Any]) -> Iterator[np.ndarray]:
        try:
            for frame in frames:
                block = av_frame_samples(frame)
                if block.shape[0] != self.channels or frame.sample_rate != self.sample_rate:
                    raise AudioError(
                        f"{self.path}: its channels or sample rate change partway (from "
                        f"{self.channels} at {self.sample_rate} Hz to {block.shape[0]} at "
                        f"{frame.sample_rate} Hz); aqsep reads streams that keep theirs"
                    )
                yield block
        except AudioError:
            raise
        except Exception as err:  # PyAV raises many error types for broken input
            raise self._fail(err) from None

    def _count(self) -> int:
        assert self._decoded is not None
        total = self._buf.shape[1] + sum(block.shape[1] for block in self._decoded)
        self._open()
        return total

    def read(self, start: int, stop: int | None = None) -> np.ndarray:
        """``(channels, n)`` samples from ``start`` to ``stop`` (or the end of the stream), fewer
        where the stream ends first."""
        if start < self._buf_start:  # behind what is kept: decode again, keep more from now on
            self._keep = max(2 * self._keep, self._buf_start + self._buf.shape[1] - start)
            self._open()
        if self._decoded is None:
            raise AudioError(f"{self.path}: read after close")
        blocks = [self._buf]
        end = self._buf_start + self._buf.shape[1]
        while stop is None or end < stop:
            block = next(self._decoded, None)
            if block is None:
                break
            blocks.append(block)
            end += block.shape[1]
        if len(blocks) > 1:
            self._buf = np.concatenate(blocks, axis=1)
        lo = max(start - self._buf_start, 0)
        hi = self._buf.shape[1] if stop is None else max(stop - self._buf_start, lo)
        out = self._buf[:, lo:hi].copy()
        # keep what lies within self._keep samples of the end of this read
        drop = min(
            self._buf.shape[1], (end if stop is None else stop) - self._keep - self._buf_start
        )
        if drop > 0:
            self._buf = self._buf[:, drop:]
            self._buf_start += drop
        return out

    def close(self) -> None:
        self._decoded = None
        if self._container is not None:
            self._container.close()
            self._container = None


def _libsndfile_reason(err: Exception) -> str:
    """libsndfile's own words, when they add something: its "Error opening ...: File does not
    exist or is not a regular file" for a file that exists only misleads."""
    text = str(err)
    if "does not exist or is not a regular file" in text:
        return ""
    return f": {text}"


def _check_wav_complete(path: Path, sample_rate: int, frame_bytes: int) -> None:
    """Refuse a RIFF WAV whose data chunk announces more bytes than the file holds (a cut
    download or copy): libsndfile would read what is there as if it were the whole recording.
    Sizes of 0 and 0xFFFFFFFF (written by streaming recorders before they know it) are not
    checked, nor are RF64 files."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(4) != b"RIFF":
            return
        offset = 12
        for _ in range(64):  # chunks before the data one: fmt, LIST, fact, ...
            fh.seek(offset)
            head = fh.read(8)
            if len(head) < 8:
                return
            announced = int.from_bytes(head[4:], "little")
            if head[:4] == b"data":
                held = size - offset - 8
                if announced not in (0, 0xFFFFFFFF) and announced > held and frame_bytes > 0:
                    raise AudioError(
                        f"{path}: truncated: its header announces "
                        f"{announced / frame_bytes / sample_rate:.2f} s of audio, the file holds "
                        f"{max(held, 0) / frame_bytes / sample_rate:.2f} s; re-download or "
                        "re-export it"
                    )
                return
            offset += 8 + announced + (announced & 1)


def _not_for_libsndfile(err: Exception) -> bool:
    """Whether libsndfile's error says the file is of a format it does not read (PyAV may)."""
    return isinstance(err, sf.LibsndfileError) and (
        "Format not recognised" in str(err) or "unknown format" in str(err).lower()
    )


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
        if _not_for_libsndfile(err):
            stream = AvStream(path)
            try:
                audio = stream.read(start, None if frames < 0 else start + frames)
            finally:
                stream.close()
            sr = stream.sample_rate
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
    (formats that libsndfile does not read are decoded front to back by :class:`AvStream`,
    which keeps a bounded stretch of recent audio).
    """

    def __init__(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> None:
        self._file: sf.SoundFile | None = None
        self._array: np.ndarray | None = None
        self._stream: AvStream | None = None
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
            if self._file.format == "WAV" and self._file.subtype in _WAV_SAMPLE_BYTES:
                try:
                    _check_wav_complete(
                        path,
                        self.sample_rate,
                        self.channels * _WAV_SAMPLE_BYTES[self._file.subtype],
                    )
                except (AudioError, OSError):
                    self._file.close()
                    raise
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            if self._file is not None:
                self._file.close()
                self._file = None
            if _not_for_libsndfile(err):
                self._stream = AvStream(path)
                self.sample_rate, self.channels = self._stream.sample_rate, self._stream.channels
                self.frames = self._stream.frames
            else:
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
        elif self._stream is not None:
            block = self._stream.read(lo, hi)
            if block.shape[1] < hi - lo:  # the stream ended before the samples it counted
                raise AudioError(
                    f"{self.name}: audio stops at {(lo + block.shape[1]) / self.sample_rate:.2f} s "
                    f"of the {self.frames / self.sample_rate:.2f} s it held when opened: was the "
                    "file changed while being read?"
                )
            out[:, lo - start : hi - start] = block
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
        if self._stream is not None:
            self._stream.close()
            self._stream = None

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


def output_format(fmt: str, bits: str | int = "16") -> tuple[str, str]:
    """An output's file format (``"wav"`` or ``"flac"``) and sample format (:func:`output_bits`),
    checked together: FLAC stores integer samples only. :class:`OutputError` otherwise."""
    bits = output_bits(bits)
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise OutputError(f"unsupported output format {fmt!r}; choose wav or flac")
    fmt = fmt.lower()
    if fmt == "flac" and bits == "32f":
        raise OutputError("FLAC cannot store float samples; use 16 or 24 bits, or wav")
    return fmt, bits


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


def write_text_atomic(path: Path, text: str, newline: str | None = None) -> None:
    """Write ``path`` whole or not at all, with the permissions of any new file of the process
    (``0o666`` less the umask), as every other output; a failure names the path."""
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "x", encoding="utf-8", newline=newline) as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(write_failure(path, err)) from None
        raise


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
        fmt, bits = output_format(fmt or self.path.suffix.lstrip(".") or "wav", bits)
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

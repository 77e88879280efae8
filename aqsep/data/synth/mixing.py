"""A produced sound: per-stem EQ, compression, panning and a shared room, in stereo.

Every effect here acts on one stem at a time, before the stems are summed, so the mixture stays
exactly the sum of the stems; nothing non-linear is ever applied to the mixture alone. The
parameters of a track are drawn from the track's own random generator
(:func:`draw_room`, :func:`draw_stem_mix`), so a corpus stays deterministic for its seed.

- EQ (:func:`equalize`): biquads of the Audio EQ Cookbook (R. Bristow-Johnson): high-pass, low
  and high shelves, peaking bands.
- Compression (:func:`compress`): a feed-forward compressor with a stereo-linked peak detector
  per block of samples, a hard knee, attack and release smoothing of the gain reduction, and a
  make-up gain that restores the stem's loudness while playing.
- Panning (:func:`pan`): the constant-power law for a mono source; for a stereo source its
  width (mid/side) and then a balance with the same law.
- Reverb (:func:`room_impulse`, :class:`Reverb`): one synthetic room per track, an impulse
  response of exponentially decaying noise (independent on the two channels, high frequencies
  decaying faster), fed by every stem at its own send level.

Arrays are ``(samples, channels)`` float32 throughout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from aqsep.audio import rms_db  # the level of all samples, every channel, in dBFS

__all__ = [
    "Band",
    "Compressor",
    "Reverb",
    "Room",
    "StemMix",
    "active_db",
    "apply_stem_mix",
    "compress",
    "crest_factor_db",
    "draw_room",
    "draw_stem_mix",
    "equalize",
    "pan",
    "rms_db",
    "room_impulse",
]


def active_db(x: np.ndarray, sample_rate: int) -> float:
    """Loudness while playing: RMS over the 50 ms frames within 30 dB of the loudest."""
    hop = max(1, sample_rate // 20)
    n = len(x) // hop
    if n == 0:
        return rms_db(x)
    frames = np.square(x[: n * hop], dtype=np.float64).reshape(n, -1)
    e = np.mean(frames, axis=1)
    peak = float(e.max())
    if peak <= 0:
        return -200.0
    active = e[e >= peak * 1e-3]
    return float(10 * np.log10(active.mean() + 1e-20))


def crest_factor_db(x: np.ndarray) -> float:
    """Peak over RMS, in dB."""
    return float(20 * np.log10(np.max(np.abs(x)) + 1e-12) - rms_db(x))


# ---------------------------------------------------------------------------------------------
# EQ
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """One biquad: ``kind`` is "highpass", "lowshelf", "highshelf" or "peak"."""

    kind: str
    freq: float  # Hz: corner, shelf midpoint or centre
    gain_db: float = 0.0
    q: float = 0.707


def _biquad(band: Band, sample_rate: int) -> np.ndarray:
    """Second-order section ``[b0, b1, b2, 1, a1, a2]`` of a band (Audio EQ Cookbook)."""
    w0 = 2 * math.pi * min(band.freq, 0.45 * sample_rate) / sample_rate
    cos_w, sin_w = math.cos(w0), math.sin(w0)
    alpha = sin_w / (2 * band.q)
    a = 10 ** (band.gain_db / 40)
    if band.kind == "highpass":
        b = [(1 + cos_w) / 2, -(1 + cos_w), (1 + cos_w) / 2]
        den = [1 + alpha, -2 * cos_w, 1 - alpha]
    elif band.kind == "peak":
        b = [1 + alpha * a, -2 * cos_w, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos_w, 1 - alpha / a]
    elif band.kind in ("lowshelf", "highshelf"):
        s = 2 * math.sqrt(a) * alpha
        sign = 1 if band.kind == "lowshelf" else -1
        b = [
            a * ((a + 1) - sign * (a - 1) * cos_w + s),
            sign * 2 * a * ((a - 1) - sign * (a + 1) * cos_w),
            a * ((a + 1) - sign * (a - 1) * cos_w - s),
        ]
        den = [
            (a + 1) + sign * (a - 1) * cos_w + s,
            -sign * 2 * ((a - 1) + sign * (a + 1) * cos_w),
            (a + 1) + sign * (a - 1) * cos_w - s,
        ]
    else:
        raise ValueError(f"unknown EQ band kind {band.kind!r}")
    return np.array(b + den, dtype=np.float64) / den[0]


def equalize(x: np.ndarray, bands: list[Band], sample_rate: int) -> np.ndarray:
    """``x`` through the bands in series."""
    if not bands:
        return x
    from scipy.signal import sosfilt  # scipy comes with scikit-learn

    sos = np.stack([_biquad(b, sample_rate) for b in bands])
    return sosfilt(sos, x, axis=0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compressor:
    threshold_db: float  # relative to the stem's loudness while playing (active_db)
    ratio: float
    attack_s: float
    release_s: float


_DETECTOR_S = 0.002  # block of the peak detector


def compress(x: np.ndarray, comp: Compressor, sample_rate: int) -> np.ndarray:
    """Feed-forward compression of ``x`` with make-up gain to its former active loudness.

    The detector takes the peak of every 2 ms block over both channels (stereo-linked); the
    gain reduction above the threshold, ``(level - threshold) * (1 - 1 / ratio)`` dB, rises with
    the attack time constant and falls with the release one; it is interpolated back to
    samples and applied to every channel alike.
    """
    before = active_db(x, sample_rate)
    hop = max(1, int(_DETECTOR_S * sample_rate))
    n_blocks = -(-len(x) // hop)
    padded = np.zeros((n_blocks * hop, x.shape[1]), dtype=np.float32)
    padded[: len(x)] = np.abs(x)
    peak = padded.reshape(n_blocks, hop * x.shape[1]).max(axis=1)
    level = 20 * np.log10(peak.astype(np.float64) + 1e-9)
    threshold = before + comp.threshold_db
    target = np.maximum(level - threshold, 0.0) * (1.0 - 1.0 / comp.ratio)
    up = math.exp(-hop / (comp.attack_s * sample_rate))
    down = math.exp(-hop / (comp.release_s * sample_rate))
    reduction = np.empty(n_blocks)
    g = 0.0
    for i, t in enumerate(target.tolist()):
        c = up if t > g else down
        g = c * g + (1 - c) * t
        reduction[i] = g
    centres = (np.arange(n_blocks) + 0.5) * hop
    gain_db = np.interp(np.arange(len(x)), centres, -reduction)
    y = x * (10 ** (gain_db / 20)).astype(np.float32)[:, None]
    return (y * np.float32(10 ** ((before - active_db(y, sample_rate)) / 20))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Panning
# ---------------------------------------------------------------------------------------------


def pan(x: np.ndarray, position: float, width: float = 1.0) -> np.ndarray:
    """``(samples, 2)``: ``x`` placed at ``position`` (-1 left, 0 centre, +1 right).

    A mono source is panned with the constant-power law (both channels at -3 dB in the centre,
    so its power is the same everywhere); a stereo source first has its side signal scaled by
    ``width`` (0 mono, 1 as recorded), then the same law as a balance, normalised so that the
    centre leaves it unchanged.
    """
    theta = (min(max(position, -1.0), 1.0) + 1) * math.pi / 4
    left, right = math.cos(theta), math.sin(theta)
    if x.shape[1] == 1:
        return np.concatenate([x * np.float32(left), x * np.float32(right)], axis=1)
    mid = (x[:, 0] + x[:, 1]) / 2
    side = (x[:, 0] - x[:, 1]) / 2 * np.float32(width)
    k = math.sqrt(2)
    return np.stack([(mid + side) * np.float32(k * left), (mid - side) * np.float32(k * right)], 1)


# ---------------------------------------------------------------------------------------------
# Reverb
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    rt60_s: float  # time for the low band to decay by 60 dB
    predelay_s: float
    damping: float  # RT60 of the high band relative to the low band (0-1)
    crossover_hz: float
    seed: int  # of the noise


def room_impulse(room: Room, sample_rate: int) -> np.ndarray:
    """Impulse response ``(samples, 2)`` of a room, unit energy per channel.

    Independent white noise on each channel (a decorrelated, wide tail), split at the
    crossover; each band decays exponentially, by 60 dB in its RT60 (the high band's is
    ``damping`` times the low band's), and the response stops at the low band's RT60.
    """
    from scipy.signal import butter, sosfilt

    n = max(8, int(room.rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    noise = np.random.default_rng(room.seed).standard_normal((n, 2))
    sos = butter(2, min(room.crossover_hz, 0.45 * sample_rate), fs=sample_rate, output="sos")
    low = sosfilt(sos, noise, axis=0)
    high = noise - low
    decay_low = np.exp(-math.log(1000) * t / room.rt60_s)[:, None]
    decay_high = np.exp(-math.log(1000) * t / (room.rt60_s * room.damping))[:, None]
    ir = low * decay_low + high * decay_high
    ir /= np.sqrt(np.sum(ir**2, axis=0, keepdims=True))
    pre = np.zeros((int(room.predelay_s * sample_rate), 2))
    return np.concatenate([pre, ir]).astype(np.float32)


class Reverb:
    """Convolution with a room's impulse response ``(taps, 2)`` for signals of ``n_samples``
    (the response's spectrum is computed once and shared by the stems of a track)."""

    def __init__(self, ir: np.ndarray, n_samples: int):
        from scipy.fft import next_fast_len, rfft

        self.n_samples = n_samples
        self.size = next_fast_len(n_samples + len(ir), real=True)
        self.spectrum = rfft(ir.astype(np.float32), self.size, axis=0)  # single precision

    def wet(self, x: np.ndarray, send_db: float) -> np.ndarray:
        """The wet signal ``(samples, 2)`` of ``x`` (the mean of its channels feeds the room)
        at ``send_db``, cut to the length of ``x``."""
        from scipy.fft import irfft, rfft

        if len(x) != self.n_samples:
            raise ValueError(f"the reverb was set up for {self.n_samples} samples, not {len(x)}")
        feed = x.mean(axis=1) * np.float32(10 ** (send_db / 20))
        wet = irfft(rfft(feed, self.size)[:, None] * self.spectrum, self.size, axis=0)
        return wet[: len(x)].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# A stem's mix, drawn per track
# ---------------------------------------------------------------------------------------------


@dataclass
class StemMix:
    """The chain of one stem: EQ, then compression, then panning, plus a send to the room."""

    eq: list[Band] = field(default_factory=list)
    compressor: Compressor | None = None
    position: float = 0.0
    width: float = 1.0
    send_db: float | None = None  # None: no reverb

    def to_dict(self) -> dict[str, Any]:
        return {
            "eq": [asdict(b) for b in self.eq],
            "compressor": asdict(self.compressor) if self.compressor is not None else None,
            "pan": self.position,
            "width": self.width,
            "reverb_send_db": self.send_db,
        }


def draw_room(rng: np.random.Generator) -> Room:
    """A room for a track: from a small dry studio to a hall."""
    return Room(
        rt60_s=round(float(np.exp(rng.uniform(np.log(0.3), np.log(2.5)))), 3),
        predelay_s=round(float(rng.uniform(0.0, 0.04)), 4),
        damping=round(float(rng.uniform(0.25, 0.8)), 3),
        crossover_hz=round(float(rng.uniform(1500, 5000)), 1),
        seed=int(rng.integers(2**31)),
    )


#: Per coarse role: (pan range, send range in dB or None, high-pass range in Hz or None).
_ROLES: dict[str, tuple[float, tuple[float, float] | None, tuple[float, float] | None]] = {
    "vocals": (0.15, (-16.0, -5.0), (70.0, 160.0)),
    "bass": (0.1, None, None),
    "kick": (0.05, (-34.0, -20.0), None),
    "snare": (0.15, (-20.0, -8.0), (60.0, 140.0)),
    "hi-hat": (0.5, (-26.0, -14.0), (200.0, 600.0)),
    "toms": (0.5, (-22.0, -10.0), (50.0, 100.0)),
    "cymbals": (0.6, (-24.0, -12.0), (200.0, 500.0)),
    "other": (0.8, (-20.0, -6.0), (40.0, 150.0)),
}


def _r(x: float, digits: int = 2) -> float:
    return round(float(x), digits)


def draw_stem_mix(
    rng: np.random.Generator, fine: str, coarse: str, drum_side: float = 1.0
) -> StemMix:
    """The chain of one stem, drawn for its role (a drum piece, else its coarse class).

    ``drum_side`` (+1 or -1) puts the hi-hat on one side and the toms sweeping across, the
    same for every piece of a track's kit.
    """
    role = fine if fine in _ROLES else coarse
    spread, send, highpass = _ROLES[role]
    eq: list[Band] = []
    if highpass is not None and rng.random() < 0.8:
        eq.append(Band("highpass", _r(rng.uniform(*highpass), 1), 0.0, 0.707))
    if rng.random() < 0.6:
        eq.append(Band("lowshelf", _r(rng.uniform(80, 250), 1), _r(rng.uniform(-5, 4))))
    for _ in range(int(rng.integers(0, 3))):
        freq = float(np.exp(rng.uniform(np.log(200), np.log(6000))))
        eq.append(Band("peak", _r(freq, 1), _r(rng.uniform(-6, 5)), _r(rng.uniform(0.7, 3))))
    if rng.random() < 0.6:
        eq.append(Band("highshelf", _r(rng.uniform(3000, 9000), 1), _r(rng.uniform(-6, 4))))
    compressor = None
    if rng.random() < (0.85 if coarse in ("vocals", "bass", "drums") else 0.5):
        compressor = Compressor(
            threshold_db=_r(rng.uniform(-10, 0)),
            ratio=_r(rng.uniform(1.5, 8)),
            attack_s=_r(float(np.exp(rng.uniform(np.log(0.001), np.log(0.03)))), 4),
            release_s=_r(rng.uniform(0.04, 0.3), 3),
        )
    if fine == "hi-hat":
        position = drum_side * rng.uniform(0.2, spread)
    else:
        position = rng.uniform(-spread, spread)
    send_db = _r(rng.uniform(*send)) if send is not None and rng.random() < 0.9 else None
    return StemMix(eq, compressor, _r(position), _r(rng.uniform(0.3, 1.0)), send_db)


def apply_stem_mix(
    x: np.ndarray, mix: StemMix, room: Reverb | None, sample_rate: int
) -> np.ndarray:
    """A source ``(samples, channels)`` through its chain: a stereo stem ``(samples, 2)``."""
    y = equalize(x, mix.eq, sample_rate)
    if mix.compressor is not None:
        y = compress(y, mix.compressor, sample_rate)
    y = pan(y, mix.position, mix.width)
    if room is not None and mix.send_db is not None:
        y = y + room.wet(y, mix.send_db)
    return y.astype(np.float32)

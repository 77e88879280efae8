"""The music of a track: pieces of the music21 corpus and generated parts, in quarter notes.

Everything here is symbolic (no audio): the candidate pieces of each split, a piece's parts as
notes, an excerpt cut to a track's length, the harmony heard on every beat, and the parts
generated on it (drum grooves, bass lines, chord accompaniment). Random choices are drawn from
the generator passed in, so a track's music depends on its seed only.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")

#: The pieces of a drum kit, each its own stem (fine labels).
DRUM_PIECES = ("kick", "snare", "hi-hat", "toms", "cymbals")

# ---------------------------------------------------------------------------------------------
# Pieces of the music21 corpus
# ---------------------------------------------------------------------------------------------

#: Category -> (weight when picking a piece for a track, glob patterns, max file size in bytes).
#: Large files are left out because they take seconds to parse.
PIECE_CATEGORIES: dict[str, tuple[float, tuple[str, ...], int]] = {
    "chorales": (0.34, ("bach/*.mxl", "bach/*.xml"), 60_000),
    "palestrina": (0.18, ("palestrina/*.krn",), 30_000),
    "madrigals": (0.1, ("monteverdi/*.mxl",), 40_000),
    "quartets": (
        0.14,
        (
            "haydn/*/*.mxl",
            "mozart/*/*.mxl",
            "beethoven/*/*.mxl",
            "schumann_robert/opus41no1/*.mxl",
        ),
        25_000,
    ),
    "other": (
        0.14,
        (
            "trecento/*.xml",
            "trecento/*.mxl",
            "handel/*/*.mxl",
            "corelli/*/*.xml",
            "verdi/*.mxl",
            "luca/*.xml",
            "lusitano/*.mxl",
            "schubert/*.xml",
            "cpebach/*.mxl",
            "joplin/*.mxl",
        ),
        200_000,
    ),
}
_GENERATED_WEIGHT = 0.1  # share of tracks built on a generated chord progression
_MAX_PIECE_PARTS = 5
PIECE_ATTEMPTS = 4

#: Share of pieces (by a hash of the corpus path, independent of the seed) kept for each split.
_PIECE_SPLIT = {"test": 0.1, "valid": 0.1}


def piece_split(relpath: str) -> str:
    """Split of a piece, from a hash of its corpus path: the same on every machine and seed."""
    u = int(hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    if u < _PIECE_SPLIT["test"]:
        return "test"
    if u < _PIECE_SPLIT["test"] + _PIECE_SPLIT["valid"]:
        return "valid"
    return "train"


def _music21_corpus_root() -> Path | None:
    try:
        from music21 import common
    except ImportError:
        return None
    root = Path(common.getCorpusFilePath())
    return root if root.is_dir() else None


def piece_pools() -> dict[str, dict[str, list[str]]]:
    """split -> category -> sorted corpus-relative paths of candidate pieces."""
    pools: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    root = _music21_corpus_root()
    if root is None:
        return pools
    for category, (_, patterns, max_bytes) in PIECE_CATEGORIES.items():
        found: set[str] = set()
        for pattern in patterns:
            for path in root.glob(pattern):
                if path.is_file() and path.stat().st_size <= max_bytes:
                    found.add(path.relative_to(root).as_posix())
        for rel in sorted(found):
            pools[piece_split(rel)].setdefault(category, []).append(rel)
    return pools


# ---------------------------------------------------------------------------------------------
# Music: excerpts, harmony, generated parts
# ---------------------------------------------------------------------------------------------

# A note is (onset in quarter notes, duration in quarter notes, MIDI key, velocity).
Note = tuple[float, float, int, int]


@dataclass
class Music:
    parts: list[list[tuple[float, float, int]]]  # (onset_q, dur_q, key) from the piece
    names: list[str]
    bar_q: float
    beat_q: float
    compound: bool
    piece: str
    measures: list[float]  # offsets of the measures, in quarter notes
    start_q: float = 0.0


def _parse_piece(relpath: str) -> Music | None:
    """Notes of every part of a music21 corpus piece, or None when unusable."""
    root = _music21_corpus_root()
    if root is None:
        return None
    from music21 import corpus, meter, stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            score = corpus.parse(str(root / relpath))
        except Exception:
            try:  # a parse cache written by a concurrent process may be unreadable
                score = corpus.parse(str(root / relpath), forceSource=True)
            except Exception:
                return None
    if isinstance(score, stream.Opus):
        scores = list(score.scores)
        if not scores:
            return None
        score = scores[0]
    ts = next(iter(score.recurse().getElementsByClass(meter.TimeSignature)), None)
    bar_q, beat_q, compound = 4.0, 1.0, False
    if ts is not None:
        bar_q = float(ts.barDuration.quarterLength) or 4.0
        beat_q = float(ts.beatDuration.quarterLength) or 1.0
        compound = ts.beatDivisionCount == 3
    parts: list[list[tuple[float, float, int]]] = []
    names: list[str] = []
    for part in score.parts:
        notes: list[tuple[float, float, int]] = []
        open_ties: dict[int, int] = {}  # key -> index in notes of the note it continues
        for n in part.flatten().notes:
            dur = float(n.quarterLength)
            if dur <= 0:
                continue  # grace notes
            onset = float(n.offset)
            tie = getattr(n, "tie", None)
            for p in getattr(n, "pitches", ()):
                key = int(round(p.ps))
                ptie = tie if tie is not None else getattr(p, "tie", None)
                kind = ptie.type if ptie is not None else None
                if kind in ("stop", "continue") and key in open_ties:
                    i = open_ties[key]
                    o, d, k = notes[i]
                    if abs(o + d - onset) < 1e-6:
                        notes[i] = (o, d + dur, k)
                        if kind == "stop":
                            del open_ties[key]
                        continue
                notes.append((onset, dur, key))
                if kind in ("start", "continue"):
                    open_ties[key] = len(notes) - 1
                else:
                    open_ties.pop(key, None)
        if len(notes) >= 4:
            notes.sort()
            parts.append(notes)
            names.append(str(part.partName or f"part {len(parts)}"))
    if len(parts) < 2:
        return None
    if len(parts) > _MAX_PIECE_PARTS:  # keep the outer voices and the first inner ones
        keep = list(range(_MAX_PIECE_PARTS - 1)) + [len(parts) - 1]
        parts = [parts[i] for i in keep]
        names = [names[i] for i in keep]
    measures = [float(m.offset) for m in score.parts[0].getElementsByClass(stream.Measure)]
    return Music(parts, names, bar_q, beat_q, compound, relpath, measures)


_PROGRESSIONS_MAJOR = (
    (0, 7, 9, 5),  # I V vi IV
    (9, 5, 0, 7),  # vi IV I V
    (0, 9, 5, 7),  # I vi IV V
    (0, 5, 7, 5),  # I IV V IV
    (2, 7, 0, 0),  # ii V I I
    (0, 4, 5, 7),  # I iii IV V
)
_PROGRESSIONS_MINOR = ((0, 8, 3, 10), (0, 5, 7, 0), (0, 10, 8, 7), (0, 3, 10, 5))


def _generated_music(rng: np.random.Generator) -> Music:
    """A four-voice piece on a pop chord progression (melody, two inner voices, bass)."""
    minor = rng.random() < 0.35
    progs = _PROGRESSIONS_MINOR if minor else _PROGRESSIONS_MAJOR
    prog = progs[int(rng.integers(len(progs)))]
    beats = 3 if rng.random() < 0.2 else 4
    chord_beats = beats if rng.random() < 0.7 else 2
    tonic = 60 + int(rng.integers(-5, 7))
    n_bars = 8
    length = float(n_bars * beats)
    chords = []
    t = 0.0
    i = 0
    while t < length:
        root = prog[i % len(prog)]
        major = root in ((3, 7, 8, 10) if minor else (0, 5, 7))
        third = 4 if major else 3
        pcs = [(tonic + root) % 12, (tonic + root + third) % 12, (tonic + root + 7) % 12]
        chords.append((t, float(chord_beats), pcs))
        t += chord_beats
        i += 1

    def near(pc: int, target: float) -> int:
        base = int(target) - ((int(target) - pc) % 12)
        return base + 12 if abs(base + 12 - target) < abs(base - target) else base

    bass: list[tuple[float, float, int]] = []
    alto: list[tuple[float, float, int]] = []
    tenor: list[tuple[float, float, int]] = []
    melody: list[tuple[float, float, int]] = []
    a_prev, t_prev, m_prev = 64.0, 57.0, 72.0
    for onset, dur, pcs in chords:
        bass.append((onset, dur, near(pcs[0], 43)))
        a = near(pcs[1 + int(rng.integers(2))], a_prev)
        tn = near(pcs[int(rng.integers(3))], t_prev)
        alto.append((onset, dur, a))
        tenor.append((onset, dur, tn))
        a_prev, t_prev = float(a), float(tn)
        pos = onset
        while pos < onset + dur - 1e-9:
            step = float(rng.choice([0.5, 1.0, 1.0, 2.0]))
            step = min(step, onset + dur - pos)
            if rng.random() < 0.75 or not melody:
                key = near(pcs[int(rng.integers(3))], m_prev)
            else:
                key = melody[-1][2] + int(rng.choice([-2, -1, 1, 2]))
            key = int(np.clip(key, 62, 81))
            if rng.random() > 0.1:
                melody.append((pos, step, key))
            m_prev = float(key)
            pos += step
    return Music(
        [melody, alto, tenor, bass],
        ["melody", "alto", "tenor", "bass"],
        float(beats),
        1.0,
        False,
        "generated",
        [float(b * beats) for b in range(n_bars)],
    )


def excerpt(
    music: Music, rng: np.random.Generator, need_q: float
) -> list[list[tuple[float, float, int]]]:
    """Cut (and loop when too short) every part to ``need_q`` quarters from a random measure."""
    end = max(o + d for part in music.parts for o, d, _ in part)
    measures = [m for m in music.measures if m < end] or [0.0]
    fitting = [m for m in measures if end - m >= need_q]
    start = (
        float(rng.choice(fitting)) if fitting else float(measures[int(rng.integers(len(measures)))])
    )
    if end - start < min(need_q, 4 * music.bar_q):
        start = 0.0
    span = end - start
    music.start_q = start
    out = []
    for part in music.parts:
        notes = []
        cycle = 0
        while cycle * span < need_q:
            shift = cycle * span - start
            for o, d, k in part:
                if o < start - 1e-9:
                    continue
                t = o + shift
                if t >= need_q - 1e-9:
                    break
                notes.append((t, min(d, need_q - t), k))
            cycle += 1
        out.append(notes)
    return out


def _chord_root(keys: Sequence[int]) -> int:
    """Root pitch class of a set of sounding keys, by thirds-and-fifths template matching.

    Each pitch class present is tried as the root; it scores for the third, fifth and seventh
    above it that are also present, with the lowest sounding note winning ties.
    """
    pcs = {k % 12 for k in keys}
    bass = min(keys) % 12
    best, best_score = bass, -1.0
    for root in sorted(pcs):
        iv = {(p - root) % 12 for p in pcs}
        score = 0.0
        score += 2.0 if (4 in iv or 3 in iv) else 0.0
        score += 1.5 if 7 in iv else 0.0
        score += 0.5 if (10 in iv or 11 in iv) else 0.0
        score -= 1.0 if (1 in iv or 6 in iv) else 0.0
        score += 0.75 if root == bass else 0.0
        if score > best_score:
            best, best_score = root, score
    return best


def beat_harmony(
    parts: Sequence[Sequence[tuple[float, float, int]]], beat_q: float, need_q: float
) -> list[tuple[int, list[int]]]:
    """(root pitch class, sorted pitch classes) for every beat, from the sounding notes."""
    n_beats = int(math.ceil(need_q / beat_q - 1e-9))
    notes = sorted((o, o + d, k) for part in parts for o, d, k in part)
    result: list[tuple[int, list[int]] | None] = []
    for b in range(n_beats):
        t0, t1 = b * beat_q, (b + 1) * beat_q
        during = [(o, e, k) for o, e, k in notes if o < t1 - 1e-6 and e > t0 + 1e-6]
        at_start = sorted({k for o, e, k in during if o <= t0 + 1e-6})
        keys = at_start if len(at_start) >= 2 else sorted({k for _, _, k in during})
        if not keys:
            result.append(None)
            continue
        root = _chord_root(keys)
        full = {k % 12 for k in keys}
        if len(full) < 3:
            full.add((root + 7) % 12)
        result.append((root, sorted(full)))
    # silent beats take the chord before them (or the first chord, at the start)
    last = next((r for r in result if r is not None), (0, [0, 4, 7]))
    filled = []
    for r in result:
        if r is not None:
            last = r
        filled.append(last)
    return filled


def register_shift(keys: Sequence[int], center: int, lo: int = 21, hi: int = 108) -> int:
    """Octave shift that moves the median of ``keys`` near ``center``."""
    if not keys:
        return 0
    median = float(np.median(keys))
    if abs(median - center) <= 7:
        shift = 0
    else:
        shift = 12 * int(round((center - median) / 12.0))
    while keys and max(keys) + shift > hi and shift > -48:
        shift -= 12
    while keys and min(keys) + shift < lo and shift < 48:
        shift += 12
    return shift


def drum_groove(
    rng: np.random.Generator,
    need_q: float,
    bar_q: float,
    beat_q: float,
    compound: bool,
    bpm: float,
    keys: dict[str, list[int]],
    force_hihat: bool,
) -> dict[str, list[Note]]:
    """A groove with fills and crashes; each kit piece is its own part."""
    beats = max(1, int(round(bar_q / beat_q)))
    steps = 3 if compound else (4 if bpm < 105 and rng.random() < 0.6 else 2)
    step_q = beat_q / steps
    per_bar = beats * steps
    n_bars = int(math.ceil(need_q / (beats * beat_q) - 1e-9))
    parts: dict[str, list[Note]] = {f: [] for f in DRUM_PIECES}

    ride = (not force_hihat) and "cymbals" in keys and 51 in keys["cymbals"] and rng.random() < 0.15
    keeper_every = int(rng.choice([1, 1, 2])) if steps >= 3 else 1
    if steps == 4 and rng.random() < 0.3:
        keeper_every = 2
    kick_every_beat = rng.random() < 0.15
    half_time = beats == 4 and rng.random() < 0.15
    phrase = int(rng.choice([4, 4, 8]))
    open_hat = rng.random() < 0.3 and 46 in keys.get("hi-hat", [])
    extra_kick = float(rng.uniform(0.0, 0.12))
    ghost = float(rng.uniform(0.0, 0.06))
    base = {f: float(rng.uniform(80, 112)) for f in DRUM_PIECES}

    def hit(fine: str, step: int, key: int, vel: float) -> None:
        t = step * step_q + float(rng.normal(0.0, 0.006))
        t = max(0.0, t)
        if t < need_q:
            parts[fine].append((t, step_q, key, int(np.clip(vel + rng.normal(0, 5), 20, 127))))

    def k(fine: str, i: int = 0) -> int:
        cand = keys[fine]
        return cand[min(i, len(cand) - 1)]

    for bar in range(n_bars):
        s0 = bar * per_bar
        fill = (bar % phrase == phrase - 1) and "toms" in keys and rng.random() < 0.7
        fill_from = per_bar - steps * (2 if (fill and beats >= 3 and rng.random() < 0.4) else 1)
        if "cymbals" in keys and bar % phrase == 0 and (bar > 0 or rng.random() < 0.6):
            hit("cymbals", s0, k("cymbals", 0), base["cymbals"] + 5)
        for s in range(per_bar):
            on_beat = s % steps == 0
            beat = s // steps
            if fill and s >= fill_from:
                toms = keys["toms"]
                i = (s - fill_from) * len(toms) // max(1, per_bar - fill_from)
                if rng.random() < 0.85:
                    hit("toms", s0 + s, toms[min(i, len(toms) - 1)], base["toms"])
                if s == per_bar - 1 or (on_beat and rng.random() < 0.5):
                    hit("kick", s0 + s, k("kick"), base["kick"])
                continue
            # time keeper
            if s % keeper_every == 0:
                vel = base["hi-hat"] + (10 if on_beat else -8)
                if ride:
                    hit("cymbals", s0 + s, 51, vel - 5)
                elif open_hat and s == per_bar - (steps // 2 if steps > 1 else 1):
                    hit("hi-hat", s0 + s, 46, vel)
                else:
                    hit("hi-hat", s0 + s, k("hi-hat"), vel)
            # kick
            if on_beat and (
                beat == 0 or kick_every_beat or (beats == 4 and beat == 2 and not half_time)
            ):
                hit("kick", s0 + s, k("kick"), base["kick"] + (6 if beat == 0 else 0))
            elif not on_beat and rng.random() < extra_kick:
                hit("kick", s0 + s, k("kick"), base["kick"] - 10)
            # snare
            if on_beat:
                back = (
                    (beats == 4 and (beat == 2 if half_time else beat in (1, 3)))
                    or (beats == 3 and beat in (1, 2))
                    or (beats == 2 and beat == 1)
                    or (beats not in (2, 3, 4) and beat % 2 == 1)
                )
                if back:
                    hit(
                        "snare",
                        s0 + s,
                        k("snare"),
                        base["snare"] - (12 if beats == 3 and beat == 2 else 0),
                    )
            elif rng.random() < ghost:
                hit("snare", s0 + s, k("snare"), 40)
    return {f: v for f, v in parts.items() if v}


def bass_line(
    rng: np.random.Generator,
    harmony: Sequence[tuple[int, list[int]]],
    beat_q: float,
    compound: bool,
    need_q: float,
) -> list[Note]:
    """A bass line on the roots of the harmony, in one of a few patterns."""
    style = str(rng.choice(["beat", "root-fifth", "eighths", "octaves", "held", "syncopated"]))
    base = float(rng.uniform(85, 112))
    low = int(rng.integers(28, 34))  # lowest key of the octave the roots are placed in

    def key(pc: int) -> int:
        return low + ((pc - low) % 12)

    notes: list[Note] = []

    def add(t: float, d: float, k: int, accent: float = 0.0) -> None:
        if t < need_q:
            vel = int(np.clip(base + accent + rng.normal(0, 5), 30, 127))
            notes.append((t, min(d, need_q - t) * 0.92, k, vel))

    sub = 3 if compound else 2
    b = 0
    while b < len(harmony):
        root = harmony[b][0]
        t = b * beat_q
        r = key(root)
        if style == "held":
            n = 1
            while b + n < len(harmony) and harmony[b + n][0] == root and n < 4:
                n += 1
            add(t, n * beat_q, r, 5)
            b += n
            continue
        if style == "beat":
            add(t, beat_q, r)
        elif style == "root-fifth":
            add(t, beat_q, r if b % 2 == 0 else (r + 7 if r + 7 <= 50 else r - 5))
        elif style == "eighths":
            for i in range(sub):
                add(t + i * beat_q / sub, beat_q / sub, r, 6 if i == 0 else -4)
        elif style == "octaves":
            for i in range(sub):
                add(t + i * beat_q / sub, beat_q / sub, r + (12 if i % 2 else 0), 0)
        else:  # syncopated
            add(t, beat_q * 0.75, r, 6)
            if rng.random() < 0.5:
                add(t + beat_q * 0.75, beat_q * 0.25, r, -8)
        b += 1
    return notes


def _voicing(pcs: Sequence[int], root: int, low: int, wide: bool) -> list[int]:
    """Chord keys above ``low``: the root first, the other pitch classes in close position."""
    first = low + ((root - low) % 12)
    keys = [first]
    for pc in sorted(pcs, key=lambda p: (p - root) % 12):
        if pc == root:
            continue
        keys.append(first + ((pc - root) % 12))
    if wide:
        keys.append(first + 12)
    return sorted(set(keys))


def accompaniment(
    rng: np.random.Generator,
    harmony: Sequence[tuple[int, list[int]]],
    beat_q: float,
    compound: bool,
    need_q: float,
    spq: float,
    low: int,
    style: str,
) -> list[Note]:
    """Accompaniment on the harmony: block chords, arpeggios, strums, off-beats or pads."""
    base = float(rng.uniform(65, 100))
    sub = 3 if compound else 2
    notes: list[Note] = []
    low = low + int(rng.integers(0, 5))

    def add(t: float, d: float, k: int, accent: float = 0.0) -> None:
        if 0 <= t < need_q:
            vel = int(np.clip(base + accent + rng.normal(0, 5), 25, 127))
            notes.append((t, max(0.05, min(d, need_q - t) * 0.95), k, vel))

    b = 0
    every = 2 if (style == "block" and rng.random() < 0.4) else 1
    while b < len(harmony):
        root, pcs = harmony[b]
        t = b * beat_q
        keys = _voicing(pcs, root, low, wide=style in ("strum", "pad"))
        if style == "pad":
            n = 1
            while b + n < len(harmony) and harmony[b + n] == harmony[b] and n < 8:
                n += 1
            for k in keys:
                add(t, n * beat_q, k, -5)
            b += n
            continue
        if style == "block":
            if b % every == 0:
                for k in keys:
                    add(t, every * beat_q, k, 6 if b % 4 == 0 else 0)
        elif style == "arpeggio":
            order = keys + keys[-2:0:-1] if len(keys) > 2 else keys
            for i in range(sub * 2 if len(keys) > 3 else sub):
                n_sub = sub * 2 if len(keys) > 3 else sub
                add(
                    t + i * beat_q / n_sub,
                    beat_q / n_sub * 1.5,
                    order[(b * n_sub + i) % len(order)],
                    4 if i == 0 else 0,
                )
        elif style == "strum":
            for i in range(sub):
                down = i % 2 == 0
                if not down and rng.random() < 0.4:
                    continue
                strum_q = 0.012 / spq  # 12 ms between strings
                seq = keys if down else keys[::-1][:3]
                for j, k in enumerate(seq):
                    add(t + i * beat_q / sub + j * strum_q, beat_q / sub, k, 5 if down else -10)
        elif style == "offbeat":
            for k in keys:
                add(t + beat_q / sub * (sub - 1), beat_q / sub, k, 0)
        b += 1
    return notes


def choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    w = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def load_music(rng: np.random.Generator, pools: dict[str, list[str]]) -> Music:
    """A piece drawn from ``pools`` (category -> paths; see :func:`piece_pools`), or now and
    then (and when no piece parses) a generated one."""
    weights = {c: PIECE_CATEGORIES[c][0] for c, paths in pools.items() if paths}
    if weights and rng.random() >= _GENERATED_WEIGHT:
        for _ in range(PIECE_ATTEMPTS):
            category = choose(rng, weights)
            paths = pools[category]
            rel = paths[int(rng.integers(len(paths)))]
            music = _parse_piece(rel)
            if music is not None:
                return music
    return _generated_music(rng)

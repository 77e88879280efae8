"""Offline synthesized multitrack corpus, rendered instrument by instrument.

Nothing here needs a network: the music comes from the music21 corpus that ships in its wheel
(Bach chorales, Palestrina masses, Monteverdi madrigals, string quartets and more) plus
generated parts (drum grooves, bass lines that follow the piece's harmony, chord and arpeggio
accompaniment), and the sound from General MIDI soundfonts played by ``tinysoundfont``. The
soundfont inside the ``pretty_midi`` wheel is always available; larger Debian soundfonts are
used when installed.

Layout written by :func:`build_corpus` (the stems-folder layout the trainer reads)::

    DIR/metadata.json                    corpus metadata (splits, pieces, soundfonts, labels)
    DIR/<split>/<track>/metadata.json    track metadata: tempo, transposition, one entry per stem
    DIR/<split>/<track>/<stem>.wav       mono PCM_16 stems, one per instrument (fine label)
    DIR/<split>/<track>/mixture.wav      float32, exactly the sum of the int16 stems

Every stem has a fine label (``kick``, ``hi-hat``, ``piano``, ``electric guitar``, ...) and a
coarse MUSDB-style class (:data:`COARSE_CLASSES`) given by :data:`FINE_TO_COARSE`. The
"vocals" class is made of voice-like patches (choir, voice oohs, synth voice) playing parts of
the music; such stems are marked ``"synthetic_voice": true``: there is no sung text.

Splits are made by piece (a test piece is never used in train or valid) and by track index
(about 80/10/10). When several soundfonts are available, one is kept for the test split only.
Rendering is deterministic for a seed: every track draws from its own random generator seeded
by ``(seed, track index)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aqsep.errors import AqsepError, DataError, OutputError

__all__ = [
    "COARSE_CLASSES",
    "FINE_TO_COARSE",
    "FORMAT_VERSION",
    "MIXTURE_NAME",
    "SPLITS",
    "build_corpus",
    "bundled_soundfont",
    "default_soundfonts",
    "is_track_complete",
    "list_tracks",
    "read_corpus_metadata",
    "read_track_metadata",
    "split_of_index",
]

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
COARSE_CLASSES = ("vocals", "drums", "bass", "other")
MIXTURE_NAME = "mixture.wav"
METADATA_NAME = "metadata.json"

#: Fine label of a stem -> coarse MUSDB-style class.
FINE_TO_COARSE: dict[str, str] = {
    # synthetic voices (voice-like soundfont patches, no text)
    "voice": "vocals",
    "choir": "vocals",
    # drum kit pieces, each its own stem
    "kick": "drums",
    "snare": "drums",
    "hi-hat": "drums",
    "toms": "drums",
    "cymbals": "drums",
    # bass
    "bass": "bass",
    "synth bass": "bass",
    # everything else
    "piano": "other",
    "electric piano": "other",
    "organ": "other",
    "acoustic guitar": "other",
    "electric guitar": "other",
    "strings": "other",
    "brass": "other",
    "woodwinds": "other",
    "synth": "other",
    "synth pad": "other",
    "mallets": "other",
}

# ---------------------------------------------------------------------------------------------
# Instruments
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Program:
    number: int  # General MIDI program, 0-based
    fine: str
    center: int  # MIDI pitch the median of a part played by it is moved near (by octaves)


def _programs(fine: str, center: int, *numbers: int) -> list[_Program]:
    return [_Program(n, fine, center) for n in numbers]


#: Voice-like patches for the "vocals" class: 52 Choir Aahs, 53 Voice Oohs, 54 Synth Voice,
#: 85 Lead 6 (voice).
_VOICE_PROGRAMS = (
    _programs("choir", 62, 52) + _programs("voice", 64, 53) + _programs("voice", 65, 54, 85)
)
_BASS_PROGRAMS = _programs("bass", 38, 32, 33, 34, 35, 36) + _programs("synth bass", 38, 38, 39)
#: Programs that play the piece's own (non-vocal) parts, grouped in families with weights.
_PART_FAMILIES: dict[str, tuple[float, list[_Program]]] = {
    "strings": (
        0.25,
        [_Program(40, "strings", 72), _Program(41, "strings", 62), _Program(42, "strings", 50)]
        + _programs("strings", 62, 48, 49),
    ),
    "woodwinds": (
        0.18,
        [
            _Program(65, "woodwinds", 64),
            _Program(66, "woodwinds", 57),
            _Program(68, "woodwinds", 72),
            _Program(70, "woodwinds", 50),
            _Program(71, "woodwinds", 64),
            _Program(73, "woodwinds", 76),
        ],
    ),
    "brass": (
        0.14,
        [
            _Program(56, "brass", 70),
            _Program(57, "brass", 52),
            _Program(60, "brass", 58),
            _Program(61, "brass", 60),
        ],
    ),
    "piano": (0.1, _programs("piano", 60, 0, 1)),
    "electric piano": (0.04, _programs("electric piano", 60, 4, 5)),
    "organ": (0.08, _programs("organ", 60, 16, 19)),
    "acoustic guitar": (0.05, _programs("acoustic guitar", 57, 24, 25)),
    "electric guitar": (0.06, _programs("electric guitar", 60, 26, 27, 29)),
    "synth": (0.06, _programs("synth", 67, 80, 81)),
    "mallets": (0.04, [_Program(11, "mallets", 72), _Program(12, "mallets", 67)]),
}
#: Programs for generated accompaniment: family -> (weight, programs, lowest voicing note, styles).
_CHORD_FAMILIES: dict[str, tuple[float, list[_Program], int, tuple[str, ...]]] = {
    "piano": (0.26, _programs("piano", 60, 0, 1, 2), 52, ("block", "arpeggio", "offbeat")),
    "electric guitar": (
        0.2,
        _programs("electric guitar", 57, 26, 27, 28, 29, 30),
        48,
        ("strum", "offbeat", "arpeggio", "pad"),
    ),
    "acoustic guitar": (0.14, _programs("acoustic guitar", 57, 24, 25), 45, ("strum", "arpeggio")),
    "organ": (0.1, _programs("organ", 60, 16, 17, 18, 19), 53, ("pad", "block")),
    "electric piano": (0.1, _programs("electric piano", 60, 4, 5), 52, ("block", "arpeggio")),
    "synth pad": (0.1, _programs("synth pad", 60, 88, 89, 90), 53, ("pad",)),
    "strings": (0.1, _programs("strings", 60, 48, 49), 53, ("pad",)),
}
_ALL_MELODIC = sorted(
    {p.number for p in _VOICE_PROGRAMS + _BASS_PROGRAMS}
    | {p.number for _, progs in _PART_FAMILIES.values() for p in progs}
    | {p.number for _, progs, _, _ in _CHORD_FAMILIES.values() for p in progs}
)

#: GM drum keys per fine label, in order of preference.
_DRUM_KEYS: dict[str, tuple[int, ...]] = {
    "kick": (36, 35),
    "snare": (38, 40, 37),
    "hi-hat": (42, 44, 46),
    "toms": (50, 48, 47, 45, 43, 41),
    "cymbals": (49, 57, 51, 59, 55),
}
_DRUM_KITS = (0, 8, 16, 24, 32, 40)  # Standard, Room, Power, Electronic, Jazz, Brush
_DRUM_BANK = 128

# Loudness check: a program is skipped when silent or this far below the soundfont's median.
_TOO_QUIET_DB = 20.0
_SILENT_DB = -75.0
_CHECK_KEYS = (36, 48, 55, 60, 64, 67, 72)
_CHECK_NOTE_S = 0.25

# ---------------------------------------------------------------------------------------------
# Pieces of the music21 corpus
# ---------------------------------------------------------------------------------------------

#: Category -> (weight when picking a piece for a track, glob patterns, max file size in bytes).
#: Large files are left out because they take seconds to parse.
_PIECE_CATEGORIES: dict[str, tuple[float, tuple[str, ...], int]] = {
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
_PIECE_ATTEMPTS = 4

#: Share of pieces (by a hash of the corpus path, independent of the seed) kept for each split.
_PIECE_SPLIT = {"test": 0.1, "valid": 0.1}


def split_of_index(index: int) -> str:
    """Split of the track with this index: 0 -> test, 1 -> valid, then 8 train in every 10.

    Depends on the index only, so a corpus grown with more hours keeps its earlier tracks in
    their splits, and any corpus of three tracks or more has every split.
    """
    r = index % 10
    if r == 0:
        return "test"
    if r == 1:
        return "valid"
    return "train"


def _piece_split(relpath: str) -> str:
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


def _piece_pools() -> dict[str, dict[str, list[str]]]:
    """split -> category -> sorted corpus-relative paths of candidate pieces."""
    pools: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    root = _music21_corpus_root()
    if root is None:
        return pools
    for category, (_, patterns, max_bytes) in _PIECE_CATEGORIES.items():
        found: set[str] = set()
        for pattern in patterns:
            for path in root.glob(pattern):
                if path.is_file() and path.stat().st_size <= max_bytes:
                    found.add(path.relative_to(root).as_posix())
        for rel in sorted(found):
            pools[_piece_split(rel)].setdefault(category, []).append(rel)
    return pools


# ---------------------------------------------------------------------------------------------
# Soundfonts
# ---------------------------------------------------------------------------------------------

_SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts")


def bundled_soundfont() -> Path | None:
    """The General MIDI soundfont inside the ``pretty_midi`` wheel, if installed."""
    try:
        import pretty_midi
    except ImportError:
        return None
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return path if path.is_file() else None


def default_soundfonts() -> list[Path]:
    """Installed General MIDI soundfonts: Debian ones (sorted), then the bundled one last.

    The last soundfont of the list is the one reserved for the test split when there are
    several, so by default the test split is rendered with the soundfont that every install
    has, and the training splits with the larger Debian ones.
    """
    found: list[Path] = []
    seen_real: set[str] = set()
    seen_names: set[str] = set()
    bundled = bundled_soundfont()
    if bundled is not None:
        seen_names.add(bundled.name.lower())
        seen_real.add(os.path.realpath(bundled))
    for folder in _SOUNDFONT_DIRS:
        d = Path(folder)
        if not d.is_dir():
            continue
        for path in sorted(d.iterdir()):
            if path.suffix.lower() not in (".sf2", ".sf3") or not path.is_file():
                continue
            real = os.path.realpath(path)
            name = Path(real).name.lower()
            if real in seen_real or name in seen_names:
                continue
            seen_real.add(real)
            seen_names.add(name)
            found.append(Path(real))
    found.sort(key=lambda p: p.name.lower())
    if bundled is not None:
        found.append(bundled)
    return found


def _import_tinysoundfont() -> Any:
    try:
        import tinysoundfont
    except ImportError as err:  # pragma: no cover - depends on the install
        raise AqsepError(
            "the corpus builder needs the 'tinysoundfont' package; install it with "
            "`pip install --no-deps tinysoundfont` (its optional pyaudio dependency is only for "
            "live playback)"
        ) from err
    return tinysoundfont


class _SynthPool:
    """One loaded synthesizer per soundfont, kept for the life of the process."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._synths: dict[str, tuple[Any, int]] = {}

    def get(self, path: Path) -> tuple[Any, int]:
        key = str(path)
        if key not in self._synths:
            tsf = _import_tinysoundfont()
            synth = tsf.Synth(samplerate=self.sample_rate)
            try:
                sfid = synth.sfload(key)
            except Exception as err:  # tinysoundfont raises its own exception types
                raise DataError(f"cannot load soundfont {path}: {err}") from err
            self._synths[key] = (synth, sfid)
        return self._synths[key]

    def render(
        self,
        path: Path,
        bank: int,
        program: int,
        drums: bool,
        events: Sequence[tuple[int, int, int, int]],
        n_samples: int,
    ) -> np.ndarray:
        """Render (sample, kind 0=off/1=on, key, velocity) events into a mono float32 buffer.

        The synthesizer is brought back to silence first, so a stem sounds the same whatever
        was rendered before it in this process (rendering is deterministic).
        """
        synth, sfid = self.get(path)
        channel = 9 if drums else 0
        synth.sounds_off()
        flush = np.zeros((self.sample_rate // 4, 2), dtype=np.float32)
        for _ in range(4):
            synth.generate_simple(flush.shape[0], flush.data.cast("B"))
        synth.program_select(channel, sfid, bank, program, is_drums=drums)
        out = np.zeros((n_samples, 2), dtype=np.float32)
        view = out.data.cast("B")
        frame = 8  # bytes per stereo float32 frame
        pos = 0
        for sample, kind, key, velocity in sorted(events):
            sample = min(max(sample, 0), n_samples)
            if sample > pos:
                synth.generate_simple(sample - pos, view[pos * frame : sample * frame])
                pos = sample
            if kind:
                synth.noteon(channel, key, velocity)
            else:
                synth.noteoff(channel, key)
        if pos < n_samples:
            synth.generate_simple(n_samples - pos, view[pos * frame :])
        synth.notes_off()
        return out.mean(axis=1)


def _db(x: np.ndarray) -> float:
    return float(20.0 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


def _check_soundfont(path: Path, sample_rate: int, pool: _SynthPool) -> dict[str, Any]:
    """Measure each program's loudness once and list what is usable.

    Some soundfonts render a few presets silent or far too quietly (the pianos of MuseScore's
    SF3 in tinysoundfont, for one): those programs are skipped for this soundfont.
    """
    synth, sfid = pool.get(path)
    note = int(_CHECK_NOTE_S * sample_rate)

    def phrase(keys: Iterable[int]) -> list[tuple[int, int, int, int]]:
        ev = []
        for i, k in enumerate(keys):
            ev += [(i * note, 1, k, 100), ((i + 1) * note - 1, 0, k, 0)]
        return ev

    levels: dict[int, float] = {}
    for prog in _ALL_MELODIC:
        if synth.sfpreset_name(sfid, 0, prog) is None:
            continue
        x = pool.render(path, 0, prog, False, phrase(_CHECK_KEYS), note * (len(_CHECK_KEYS) + 1))
        levels[prog] = _db(x)
    if not levels:
        raise DataError(f"soundfont {path} has no General MIDI melodic presets")
    median = float(np.median(list(levels.values())))
    usable = sorted(p for p, v in levels.items() if v > _SILENT_DB and v > median - _TOO_QUIET_DB)
    kits: dict[int, dict[str, list[int]]] = {}
    for kit in _DRUM_KITS:
        if synth.sfpreset_name(sfid, _DRUM_BANK, kit) is None:
            continue
        keys: dict[str, list[int]] = {}
        for fine, candidates in _DRUM_KEYS.items():
            ok = []
            for key in candidates:
                x = pool.render(path, _DRUM_BANK, kit, True, phrase([key]), 2 * note)
                if _db(x) > _SILENT_DB:
                    ok.append(key)
            if ok:
                keys[fine] = ok
        if all(f in keys for f in ("kick", "snare", "hi-hat")):
            kits[kit] = keys
    return {
        "name": path.name,
        "path": str(path),
        "bytes": path.stat().st_size,
        "level_db": {str(p): round(v, 1) for p, v in sorted(levels.items())},
        "usable_programs": usable,
        "skipped_programs": sorted(set(levels) - set(usable)),
        "drum_kits": {str(k): v for k, v in kits.items()},
    }


# ---------------------------------------------------------------------------------------------
# Music: excerpts, harmony, generated parts
# ---------------------------------------------------------------------------------------------

# A note is (onset in quarter notes, duration in quarter notes, MIDI key, velocity).
_Note = tuple[float, float, int, int]


@dataclass
class _Music:
    parts: list[list[tuple[float, float, int]]]  # (onset_q, dur_q, key) from the piece
    names: list[str]
    bar_q: float
    beat_q: float
    compound: bool
    piece: str
    measures: list[float]  # offsets of the measures, in quarter notes
    start_q: float = 0.0


def _parse_piece(relpath: str) -> _Music | None:
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
    return _Music(parts, names, bar_q, beat_q, compound, relpath, measures)


_PROGRESSIONS_MAJOR = (
    (0, 7, 9, 5),  # I V vi IV
    (9, 5, 0, 7),  # vi IV I V
    (0, 9, 5, 7),  # I vi IV V
    (0, 5, 7, 5),  # I IV V IV
    (2, 7, 0, 0),  # ii V I I
    (0, 4, 5, 7),  # I iii IV V
)
_PROGRESSIONS_MINOR = ((0, 8, 3, 10), (0, 5, 7, 0), (0, 10, 8, 7), (0, 3, 10, 5))


def _generated_music(rng: np.random.Generator) -> _Music:
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
    return _Music(
        [melody, alto, tenor, bass],
        ["melody", "alto", "tenor", "bass"],
        float(beats),
        1.0,
        False,
        "generated",
        [float(b * beats) for b in range(n_bars)],
    )


def _excerpt(
    music: _Music, rng: np.random.Generator, need_q: float
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


def _harmony(
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


def _fit_register(keys: Sequence[int], center: int, lo: int = 21, hi: int = 108) -> int:
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


def _drum_parts(
    rng: np.random.Generator,
    need_q: float,
    bar_q: float,
    beat_q: float,
    compound: bool,
    bpm: float,
    keys: dict[str, list[int]],
    force_hihat: bool,
) -> dict[str, list[_Note]]:
    """A groove with fills and crashes; each kit piece is its own part."""
    beats = max(1, int(round(bar_q / beat_q)))
    steps = 3 if compound else (4 if bpm < 105 and rng.random() < 0.6 else 2)
    step_q = beat_q / steps
    per_bar = beats * steps
    n_bars = int(math.ceil(need_q / (beats * beat_q) - 1e-9))
    parts: dict[str, list[_Note]] = {f: [] for f in _DRUM_KEYS}

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
    base = {f: float(rng.uniform(80, 112)) for f in _DRUM_KEYS}

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


def _bass_part(
    rng: np.random.Generator,
    harmony: Sequence[tuple[int, list[int]]],
    beat_q: float,
    compound: bool,
    need_q: float,
) -> list[_Note]:
    """A bass line on the roots of the harmony, in one of a few patterns."""
    style = str(rng.choice(["beat", "root-fifth", "eighths", "octaves", "held", "syncopated"]))
    base = float(rng.uniform(85, 112))
    low = int(rng.integers(28, 34))  # lowest key of the octave the roots are placed in

    def key(pc: int) -> int:
        return low + ((pc - low) % 12)

    notes: list[_Note] = []

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


def _chord_part(
    rng: np.random.Generator,
    harmony: Sequence[tuple[int, list[int]]],
    beat_q: float,
    compound: bool,
    need_q: float,
    spq: float,
    low: int,
    style: str,
) -> list[_Note]:
    """Accompaniment on the harmony: block chords, arpeggios, strums, off-beats or pads."""
    base = float(rng.uniform(65, 100))
    sub = 3 if compound else 2
    notes: list[_Note] = []
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


# ---------------------------------------------------------------------------------------------
# Track rendering
# ---------------------------------------------------------------------------------------------


class _RetryTrack(Exception):
    """This draw gave an unusable track: draw again."""


@dataclass
class _StemPlan:
    fine: str
    program: int
    bank: int
    drums: bool
    notes: list[_Note]
    level_db: float
    source: str


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    w = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _pick_program(
    rng: np.random.Generator,
    programs: Sequence[_Program],
    usable: set[int],
    median: float | None = None,
) -> _Program | None:
    cands = [p for p in programs if p.number in usable]
    if not cands:
        return None
    if median is not None:
        close = [p for p in cands if abs(p.center - median) <= 10]
        cands = close or cands
    return cands[int(rng.integers(len(cands)))]


def _file_safe(label: str) -> str:
    safe = "".join(c if (c.isalnum() or c in "-_") else "-" for c in label.strip().lower())
    return safe.strip("-") or "stem"


def _active_db(x: np.ndarray, sample_rate: int) -> float:
    """Loudness while playing: RMS over the 50 ms frames within 30 dB of the loudest."""
    hop = max(1, sample_rate // 20)
    n = len(x) // hop
    if n == 0:
        return _db(x)
    e = np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)
    peak = float(e.max())
    if peak <= 0:
        return -200.0
    active = e[e >= peak * 1e-3]
    return float(10 * np.log10(active.mean() + 1e-20))


_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    # a forked worker inherits the soundfonts the parent loaded: reuse them
    inherited = _STATE.get("pool")
    _STATE.clear()
    _STATE.update(state)
    if isinstance(inherited, _SynthPool) and inherited.sample_rate == state["sample_rate"]:
        _STATE["pool"] = inherited
    else:
        _STATE["pool"] = _SynthPool(state["sample_rate"])


def _load_music(rng: np.random.Generator, split: str) -> _Music:
    pools: dict[str, list[str]] = _STATE["pools"][split]
    weights = {c: _PIECE_CATEGORIES[c][0] for c, paths in pools.items() if paths}
    if weights and rng.random() >= _GENERATED_WEIGHT:
        for _ in range(_PIECE_ATTEMPTS):
            category = _choose(rng, weights)
            paths = pools[category]
            rel = paths[int(rng.integers(len(paths)))]
            music = _parse_piece(rel)
            if music is not None:
                return music
    return _generated_music(rng)


def _plan_track(
    rng: np.random.Generator,
    split: str,
    zero_shot: bool,
    check: dict[str, Any],
    track_seconds: float,
) -> tuple[list[_StemPlan], dict[str, Any]]:
    music = _load_music(rng, split)
    usable = set(check["usable_programs"])
    kits = {int(k): v for k, v in check["drum_kits"].items()}

    # tempo: the pulse (time signature beat) at a random rate
    if music.compound:
        bpm = float(rng.uniform(50, 92))
    else:
        bpm = float(rng.uniform(68, 132))
    spq = 60.0 / bpm / music.beat_q  # seconds per quarter note
    need_q = track_seconds / spq
    transpose = int(rng.integers(-5, 7))
    parts = _excerpt(music, rng, need_q)
    parts = [[(o, d, k + transpose) for o, d, k in p] for p in parts]
    keep = [i for i, p in enumerate(parts) if len(p) >= 2]
    parts = [parts[i] for i in keep]
    names = [music.names[i] for i in keep]
    if not parts:
        raise _RetryTrack("no notes in the excerpt")
    harmony = _harmony(parts, music.beat_q, need_q)

    stems: list[_StemPlan] = []
    medians = [float(np.median([k for _, _, k in p])) for p in parts]
    order = sorted(range(len(parts)), key=lambda i: -medians[i])  # highest part first
    assigned: set[int] = set()

    def part_notes(i: int, shift: int, base: float) -> list[_Note]:
        out = []
        for o, d, k in parts[i]:
            accent = 8.0 if abs((o / music.bar_q) - round(o / music.bar_q)) < 1e-6 else 0.0
            vel = int(np.clip(base + accent + rng.normal(0, 5), 25, 127))
            key = int(k + shift)
            while key < 21:
                key += 12
            while key > 108:
                key -= 12
            out.append((o, d, key, vel))
        return out

    # vocals: the top voice (and sometimes a second one) on voice-like patches
    if rng.random() < 0.92:
        n_voc = 2 if (len(parts) >= 3 and rng.random() < 0.35) else 1
        for i in order[:n_voc]:
            prog = _pick_program(rng, _VOICE_PROGRAMS, usable)
            if prog is None:
                break
            shift = _fit_register([k for _, _, k in parts[i]], prog.center, 40, 88)
            stems.append(
                _StemPlan(
                    prog.fine,
                    prog.number,
                    0,
                    False,
                    part_notes(i, shift, float(rng.uniform(75, 110))),
                    float(rng.uniform(-1, 4)),
                    f"piece part '{names[i]}'",
                )
            )
            assigned.add(i)

    # bass: generated on the harmony, or the piece's lowest part played by a bass patch
    if zero_shot or rng.random() < 0.95:
        prog = _pick_program(rng, _BASS_PROGRAMS, usable)
        if prog is not None:
            lowest = order[-1]
            if not zero_shot and lowest not in assigned and len(parts) >= 3 and rng.random() < 0.3:
                shift = _fit_register([k for _, _, k in parts[lowest]], prog.center, 24, 60)
                notes = part_notes(lowest, shift, float(rng.uniform(85, 110)))
                assigned.add(lowest)
                source = f"piece part '{names[lowest]}'"
            else:
                notes = _bass_part(rng, harmony, music.beat_q, music.compound, need_q)
                source = "generated bass line"
            stems.append(
                _StemPlan(
                    prog.fine, prog.number, 0, False, notes, float(rng.uniform(-3, 2)), source
                )
            )

    # the other parts of the piece
    fam_weights = {f: w for f, (w, _) in _PART_FAMILIES.items()}
    if zero_shot:  # keep piano and electric guitar to the accompaniment, one stem each
        fam_weights = {
            f: w for f, w in fam_weights.items() if f not in ("piano", "electric guitar")
        }
    for i in order:
        if i in assigned:
            continue
        prog = None
        for _ in range(4):
            fam = _choose(rng, fam_weights)
            prog = _pick_program(rng, _PART_FAMILIES[fam][1], usable, medians[i])
            if prog is not None:
                break
        if prog is None:
            continue
        shift = _fit_register([k for _, _, k in parts[i]], prog.center)
        stems.append(
            _StemPlan(
                prog.fine,
                prog.number,
                0,
                False,
                part_notes(i, shift, float(rng.uniform(65, 105))),
                float(rng.uniform(-9, -1)),
                f"piece part '{names[i]}'",
            )
        )

    # accompaniment
    if zero_shot:
        families = ["piano", "electric guitar"]
    else:
        r = rng.random()
        n_acc = 0 if r < 0.25 else (1 if r < 0.75 else 2)
        cw = {f: w for f, (w, _, _, _) in _CHORD_FAMILIES.items()}
        families = []
        for _ in range(n_acc):
            fam = _choose(rng, cw)
            cw.pop(fam)
            families.append(fam)
    for fam in families:
        _, progs, low, styles = _CHORD_FAMILIES[fam]
        prog = _pick_program(rng, progs, usable)
        if prog is None:
            continue
        style = str(rng.choice(list(styles)))
        notes = _chord_part(rng, harmony, music.beat_q, music.compound, need_q, spq, low, style)
        stems.append(
            _StemPlan(
                prog.fine,
                prog.number,
                0,
                False,
                notes,
                float(rng.uniform(-8, -1)),
                f"generated accompaniment ({style})",
            )
        )

    # drums
    drum_kit = None
    if kits and (zero_shot or rng.random() < 0.92):
        kit_ids = sorted(kits)
        drum_kit = kit_ids[int(rng.integers(len(kit_ids)))] if not zero_shot else kit_ids[0]
        keys = kits[drum_kit]
        drum_parts = _drum_parts(
            rng, need_q, music.bar_q, music.beat_q, music.compound, bpm, keys, zero_shot
        )
        kit_db = float(rng.uniform(-3, 2))
        offsets = {"kick": 0.0, "snare": -1.0, "hi-hat": -7.0, "toms": -4.0, "cymbals": -9.0}
        for fine in _DRUM_KEYS:
            if fine in drum_parts:
                stems.append(
                    _StemPlan(
                        fine,
                        drum_kit,
                        _DRUM_BANK,
                        True,
                        drum_parts[fine],
                        kit_db + offsets[fine] + float(rng.uniform(-2, 2)),
                        "generated drums",
                    )
                )
    info = {
        "piece": music.piece,
        "piece_parts": names,
        "excerpt_start_quarters": round(music.start_q, 4),
        "tempo_bpm": round(bpm, 3),
        "beat_quarters": music.beat_q,
        "bar_quarters": music.bar_q,
        "transpose": transpose,
        "drum_kit": drum_kit,
    }
    return stems, info


def _render_track(job: tuple[int, str, int, str, str]) -> dict[str, Any]:
    """Render one track into a temporary folder, then move it into place."""
    index, split, ordinal, track_dir_s, soundfont_s = job
    t_cpu = time.process_time()
    sr: int = _STATE["sample_rate"]
    seconds: float = _STATE["track_seconds"]
    seed: int = _STATE["seed"]
    soundfont = Path(soundfont_s)
    check = _STATE["checks"][soundfont_s]
    pool: _SynthPool = _STATE["pool"]
    track_dir = Path(track_dir_s)
    n_samples = int(round(seconds * sr))
    zero_shot = split == "test" and ordinal % 2 == 0

    for attempt in range(_PIECE_ATTEMPTS + 1):
        rng = np.random.default_rng([seed, index, attempt])
        try:
            plans, info = _plan_track(rng, split, zero_shot, check, seconds)
        except _RetryTrack:
            continue
        spq = 60.0 / info["tempo_bpm"] / info["beat_quarters"]
        audio: list[np.ndarray] = []
        kept: list[_StemPlan] = []
        for plan in plans:
            events = []
            for o, d, k, v in plan.notes:
                on = int(round(o * spq * sr))
                off = max(on + 1, int(round((o + d) * spq * sr)))
                events.append((on, 1, k, v))
                events.append((off, 0, k, 0))
            if not events:
                continue
            x = pool.render(soundfont, plan.bank, plan.program, plan.drums, events, n_samples)
            if not np.all(np.isfinite(x)) or float(np.max(np.abs(x))) < 1e-5:
                continue
            x = x * np.float32(10 ** ((plan.level_db - _active_db(x, sr)) / 20.0))
            audio.append(x.astype(np.float32))
            kept.append(plan)
        if len(kept) >= 2:
            break
    else:  # pragma: no cover - every attempt gave fewer than two audible stems
        raise DataError(f"track {index}: could not render two audible stems")

    # common gain: the mixture and every stem stay below the target peak
    fade = min(n_samples, int(0.02 * sr))
    ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
    for x in audio:
        x[n_samples - fade :] *= ramp
    mix = np.sum(audio, axis=0)
    peak = max(float(np.max(np.abs(mix))), max(float(np.max(np.abs(x))) for x in audio))
    target = float(rng.uniform(0.6, 0.95))
    gain = target / peak
    ints = [np.round(x * (gain * 32767.0)).clip(-32767, 32767).astype(np.int16) for x in audio]

    name = track_dir.name
    tmp = track_dir.parent / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    import soundfile as sf

    stems_meta: dict[str, Any] = {}
    used: Counter[str] = Counter()
    total = np.zeros(n_samples, dtype=np.int64)
    for plan, q in zip(kept, ints, strict=True):
        if int(np.max(np.abs(q))) < 8:  # inaudible after quantisation: leave it out
            continue
        base = _file_safe(plan.fine)
        used[base] += 1
        stem = base if used[base] == 1 else f"{base}_{used[base]}"
        sf.write(tmp / f"{stem}.wav", q, sr, subtype="PCM_16")
        total += q
        stems_meta[stem] = {
            "fine": plan.fine,
            "coarse": FINE_TO_COARSE[plan.fine],
            "program": plan.program,
            "bank": plan.bank,
            "soundfont": soundfont.name,
            "synthetic_voice": FINE_TO_COARSE[plan.fine] == "vocals",
            "source": plan.source,
            "notes": len(plan.notes),
            "rms_db": round(_db(q.astype(np.float64) / 32768.0), 2),
        }
    # int16 / 2**15 is exact in float32, and so is the sum of a few hundred of them
    mixture = (total.astype(np.float64) / 32768.0).astype(np.float32)
    _write_float_wav(tmp / MIXTURE_NAME, mixture, sr)
    meta = {
        "track": name,
        "split": split,
        "index": index,
        "piece": info["piece"],
        "piece_parts": info["piece_parts"],
        "excerpt_start_quarters": info["excerpt_start_quarters"],
        "tempo_bpm": info["tempo_bpm"],
        "beat_quarters": info["beat_quarters"],
        "bar_quarters": info["bar_quarters"],
        "transpose": info["transpose"],
        "sample_rate": sr,
        "seconds": n_samples / sr,
        "soundfont": soundfont.name,
        "seed": seed,
        "gain": gain,
        "zero_shot_layout": zero_shot,
        "mixture": MIXTURE_NAME,
        "stems": stems_meta,
    }
    with open(tmp / METADATA_NAME, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
    if track_dir.exists():
        shutil.rmtree(track_dir)
    os.replace(tmp, track_dir)
    return {
        "track": name,
        "split": split,
        "piece": info["piece"],
        "soundfont": soundfont.name,
        "fine": [s["fine"] for s in stems_meta.values()],
        "cpu_s": time.process_time() - t_cpu,
        "seconds": n_samples / sr,
    }


def _write_float_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """Mono 32-bit float WAV with a fixed header.

    libsndfile adds a PEAK chunk with a time stamp to float WAV files, which would make two
    renders of the same track differ by a few header bytes; this header has no time stamp.
    """
    data = np.ascontiguousarray(x, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, sample_rate, sample_rate * 4, 4, 32, 0)
    fact = struct.pack("<I", len(x))
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<I", len(fact))
        + fact
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    with open(path, "wb") as fh:
        fh.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def _render_job(job: tuple[int, str, int, str, str]) -> dict[str, Any]:
    return _render_track(job)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path, missing: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as err:
        raise DataError(f"{path} does not exist: {missing}") from err
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from err


def read_track_metadata(track_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata.json`` of a rendered track (raises DataError when missing or invalid)."""
    path = Path(track_dir) / METADATA_NAME
    meta = _read_json(path, "not a rendered track")
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        raise DataError(f"{path} is not a track metadata file (no 'stems')")
    return meta


def read_corpus_metadata(corpus_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The corpus-level ``metadata.json`` written by :func:`build_corpus`."""
    path = Path(corpus_dir) / METADATA_NAME
    meta = _read_json(path, "not a corpus built by `aqsep synth`")
    if not isinstance(meta, dict) or "splits" not in meta:
        raise DataError(f"{path} is not a corpus metadata file (no 'splits')")
    return meta


def is_track_complete(track_dir: str | os.PathLike[str]) -> bool:
    """True when the folder holds a readable metadata.json and every file it lists."""
    try:
        meta = read_track_metadata(track_dir)
    except DataError:
        return False
    d = Path(track_dir)
    names = [f"{s}.wav" for s in meta["stems"]] + [meta.get("mixture", MIXTURE_NAME)]
    return all((d / n).is_file() for n in names)


def list_tracks(corpus_dir: str | os.PathLike[str], split: str) -> list[Path]:
    """Folders of the complete tracks of a split, in name order."""
    d = Path(corpus_dir) / split
    if not d.is_dir():
        return []
    return [
        p
        for p in sorted(d.iterdir())
        if p.is_dir() and not p.name.startswith(".") and is_track_complete(p)
    ]


def _track_name(index: int) -> str:
    return f"track_{index:05d}"


def _soundfont_plan(soundfonts: Sequence[Path]) -> dict[str, list[Path]]:
    if len(soundfonts) == 1:
        return {s: [soundfonts[0]] for s in SPLITS}
    return {
        "train": list(soundfonts[:-1]),
        "valid": list(soundfonts[:-1]),
        "test": [soundfonts[-1]],
    }


def build_corpus(
    out_dir: str | os.PathLike[str],
    *,
    hours: float,
    seed: int,
    sample_rate: int = 22050,
    track_seconds: float = 30.0,
    jobs: int = 1,
    soundfonts: Sequence[str | os.PathLike[str]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Render a labelled multitrack corpus into ``out_dir`` and return its metadata.

    ``hours`` of audio are cut into ``max(3, round(hours * 3600 / track_seconds))`` tracks:
    track 0 goes to test, 1 to valid, then 8 in every 10 to train (:func:`split_of_index`).
    Tracks already complete in ``out_dir`` are kept; the others are rendered (in a pool of
    ``jobs`` processes). The same seed gives bit-identical audio.

    ``soundfonts``: General MIDI SF2/SF3 files; by default :func:`default_soundfonts`. With
    more than one, the last one is used for the test split only and the others for train and
    valid.

    The returned dict is the corpus metadata written to ``out_dir/metadata.json`` plus a
    ``"build"`` entry with figures of this run (tracks rendered and kept, CPU seconds).
    """
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and hours > 0):
        raise DataError(f"hours must be a positive number, got {hours!r}")
    if not (math.isfinite(track_seconds) and 1.0 <= track_seconds <= 600.0):
        raise DataError(f"track_seconds must be between 1 and 600, got {track_seconds!r}")
    if not (8000 <= int(sample_rate) <= 192000):
        raise DataError(f"sample_rate must be between 8000 and 192000 Hz, got {sample_rate!r}")
    if jobs < 1:
        raise DataError(f"jobs must be at least 1, got {jobs!r}")
    sample_rate = int(sample_rate)
    seed = int(seed)
    _import_tinysoundfont()

    if soundfonts is None:
        sf_paths = default_soundfonts()
        if not sf_paths:
            raise DataError(
                "no General MIDI soundfont found: install pretty_midi (it ships TimGM6mb.sf2) "
                "or a Debian soundfont package, or pass one with --soundfont"
            )
    else:
        sf_paths = []
        for s in soundfonts:
            p = Path(s).expanduser()
            if not p.is_file():
                raise DataError(f"soundfont {p} does not exist")
            if p.resolve() not in [q.resolve() for q in sf_paths]:
                sf_paths.append(p.resolve())
        if not sf_paths:
            raise DataError("the list of soundfonts is empty")
    names = [p.name for p in sf_paths]
    if len(set(names)) != len(names):
        raise DataError(f"two soundfonts share a file name: {names}; rename one")
    plan = _soundfont_plan(sf_paths)

    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            (out / split).mkdir(exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"cannot write the corpus into {out}: {err}") from err

    n_tracks = max(3, int(round(hours * 3600.0 / track_seconds)))
    plan_names = {s: [p.name for p in plan[s]] for s in SPLITS}
    settings = {"seed": seed, "sample_rate": sample_rate, "track_seconds": float(track_seconds)}
    root_meta_path = out / METADATA_NAME
    if root_meta_path.exists():
        old = read_corpus_metadata(out)
        for key, value in settings.items():
            if old.get(key) != value:
                raise DataError(
                    f"{out} holds a corpus built with {key}={old.get(key)!r}, not {value!r}: "
                    "use the same settings to resume it, or another folder"
                )
        if old.get("soundfont_plan") and old["soundfont_plan"] != plan_names:
            raise DataError(
                f"{out} was built with soundfonts {old['soundfont_plan']}, now {plan_names}: "
                "pass the same --soundfont files to resume it, or use another folder"
            )

    # clean temporary folders left by an interrupted run
    for split in SPLITS:
        for p in (out / split).iterdir():
            if p.is_dir() and p.name.startswith(".") and ".tmp-" in p.name:
                shutil.rmtree(p, ignore_errors=True)

    todo: list[tuple[int, str, int, str, str]] = []
    kept = 0
    ordinals: Counter[str] = Counter()
    for index in range(n_tracks):
        split = split_of_index(index)
        ordinal = ordinals[split]
        ordinals[split] += 1
        track_dir = out / split / _track_name(index)
        if is_track_complete(track_dir):
            meta = read_track_metadata(track_dir)
            if meta.get("seed") != seed or meta.get("sample_rate") != sample_rate:
                raise DataError(f"{track_dir} was rendered with other settings; use another folder")
            kept += 1
            continue
        choices = plan[split]
        sf_rng = np.random.default_rng([seed, index, 1_000_003])
        soundfont = choices[int(sf_rng.integers(len(choices)))]
        todo.append((index, split, ordinal, str(track_dir), str(soundfont)))

    pool = _SynthPool(sample_rate)
    t0_cpu = time.process_time()
    checks = {str(p): _check_soundfont(p, sample_rate, pool) for p in sf_paths}
    check_cpu = time.process_time() - t0_cpu
    for p in plan["test"]:
        c = checks[str(p)]
        if not c["drum_kits"]:
            raise DataError(f"soundfont {p.name} has no usable General MIDI drum kit (bank 128)")
    pools = _piece_pools()

    base_meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "generator": "aqsep.data.synth",
        "complete": False,
        "seed": seed,
        "hours": float(hours),
        "sample_rate": sample_rate,
        "track_seconds": float(track_seconds),
        "n_tracks": n_tracks,
        "soundfont_plan": plan_names,
        "mixture": MIXTURE_NAME,
        "coarse_classes": list(COARSE_CLASSES),
        "fine_to_coarse": dict(FINE_TO_COARSE),
        "synthetic_voice_note": (
            "stems of coarse class 'vocals' are voice-like soundfont patches (choir, voice oohs, "
            "synth voice) playing parts of the music: synthetic voice, no sung text"
        ),
    }
    if not root_meta_path.exists():
        _write_json(root_meta_path, {**base_meta, "splits": {s: [] for s in SPLITS}})

    state = {
        "sample_rate": sample_rate,
        "track_seconds": float(track_seconds),
        "seed": seed,
        "checks": checks,
        "pools": pools,
    }
    results: list[dict[str, Any]] = []
    wall0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_tracks, initial=kept, unit="track", desc="synth", dynamic_ncols=True)
    _STATE.clear()
    _STATE["pool"] = pool  # the soundfonts loaded for the check, reused by the renderers
    try:
        if jobs > 1 and len(todo) > 1:
            import multiprocessing as mp

            with mp.Pool(
                min(jobs, len(todo)), initializer=_init_worker, initargs=(state,)
            ) as mp_pool:
                for res in mp_pool.imap_unordered(_render_job, todo):
                    results.append(res)
                    if bar is not None:
                        bar.update(1)
        else:
            _init_worker(state)
            for job in todo:
                results.append(_render_job(job))
                if bar is not None:
                    bar.update(1)
    finally:
        _STATE.clear()  # let the loaded soundfonts go
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - wall0

    meta = _corpus_summary(out, n_tracks, base_meta, checks)
    _write_json(root_meta_path, meta)
    render_cpu = sum(r["cpu_s"] for r in results)
    audio_s = sum(r["seconds"] for r in results)
    meta = dict(meta)
    meta["build"] = {
        "rendered_tracks": len(results),
        "kept_tracks": kept,
        "rendered_seconds": audio_s,
        "render_cpu_seconds": render_cpu,
        "check_cpu_seconds": check_cpu,
        "wall_seconds": wall,
        "seconds_per_cpu_second": (audio_s / render_cpu) if render_cpu > 0 else None,
    }
    return meta


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def _corpus_summary(
    out: Path, n_tracks: int, base_meta: dict[str, Any], checks: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    pieces: dict[str, set[str]] = {s: set() for s in SPLITS}
    used_sf: dict[str, set[str]] = {s: set() for s in SPLITS}
    fine_counts: Counter[str] = Counter()
    for index in range(n_tracks):
        split = split_of_index(index)
        track_dir = out / split / _track_name(index)
        if not is_track_complete(track_dir):
            continue
        meta = read_track_metadata(track_dir)
        splits[split].append(track_dir.name)
        if meta.get("piece") and meta["piece"] != "generated":
            pieces[split].add(meta["piece"])
        used_sf[split].add(meta.get("soundfont", ""))
        fine_counts.update(s["fine"] for s in meta["stems"].values())
    return {
        **base_meta,
        "complete": all(len(splits[s]) for s in SPLITS)
        and sum(len(v) for v in splits.values()) == n_tracks,
        "splits": splits,
        "pieces": {s: sorted(v) for s, v in pieces.items()},
        "soundfonts": {s: sorted(v) for s, v in used_sf.items()},
        "soundfont_checks": {
            Path(k).name: {
                "skipped_programs": v["skipped_programs"],
                "drum_kits": sorted(int(x) for x in v["drum_kits"]),
            }
            for k, v in checks.items()
        },
        "stem_counts": dict(sorted(fine_counts.items())),
    }

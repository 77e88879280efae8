"""The instruments: labels, General MIDI programs, and the soundfonts that play them.

A stem's fine label (``kick``, ``piano``, ``electric guitar``...) names what plays it and maps
to a coarse MUSDB-style class (:data:`FINE_TO_COARSE`). The General MIDI programs that may play
each role are grouped here with the register they suit. Soundfonts are found on the system
(:func:`default_soundfonts`), measured once (:func:`check_soundfont`: programs rendered silent
or far too quietly are skipped) and played by ``tinysoundfont`` (:class:`SynthPool`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from aqsep.data.synth.mixing import rms_db
from aqsep.errors import AqsepError, DataError

COARSE_CLASSES = ("vocals", "drums", "bass", "other")

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
# General MIDI programs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    number: int  # General MIDI program, 0-based
    fine: str
    center: int  # MIDI pitch the median of a part played by it is moved near (by octaves)


def _programs(fine: str, center: int, *numbers: int) -> list[Program]:
    return [Program(n, fine, center) for n in numbers]


#: Voice-like patches for the "vocals" class: 52 Choir Aahs, 53 Voice Oohs, 54 Synth Voice,
#: 85 Lead 6 (voice).
VOICE_PROGRAMS = (
    _programs("choir", 62, 52) + _programs("voice", 64, 53) + _programs("voice", 65, 54, 85)
)
BASS_PROGRAMS = _programs("bass", 38, 32, 33, 34, 35, 36) + _programs("synth bass", 38, 38, 39)
#: Programs that play the piece's own (non-vocal) parts, grouped in families with weights.
PART_FAMILIES: dict[str, tuple[float, list[Program]]] = {
    "strings": (
        0.25,
        [Program(40, "strings", 72), Program(41, "strings", 62), Program(42, "strings", 50)]
        + _programs("strings", 62, 48, 49),
    ),
    "woodwinds": (
        0.18,
        [
            Program(65, "woodwinds", 64),
            Program(66, "woodwinds", 57),
            Program(68, "woodwinds", 72),
            Program(70, "woodwinds", 50),
            Program(71, "woodwinds", 64),
            Program(73, "woodwinds", 76),
        ],
    ),
    "brass": (
        0.14,
        [
            Program(56, "brass", 70),
            Program(57, "brass", 52),
            Program(60, "brass", 58),
            Program(61, "brass", 60),
        ],
    ),
    "piano": (0.1, _programs("piano", 60, 0, 1)),
    "electric piano": (0.04, _programs("electric piano", 60, 4, 5)),
    "organ": (0.08, _programs("organ", 60, 16, 19)),
    "acoustic guitar": (0.05, _programs("acoustic guitar", 57, 24, 25)),
    "electric guitar": (0.06, _programs("electric guitar", 60, 26, 27, 29)),
    "synth": (0.06, _programs("synth", 67, 80, 81)),
    "mallets": (0.04, [Program(11, "mallets", 72), Program(12, "mallets", 67)]),
}
#: Programs for generated accompaniment: family -> (weight, programs, lowest voicing note, styles).
CHORD_FAMILIES: dict[str, tuple[float, list[Program], int, tuple[str, ...]]] = {
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
    {p.number for p in VOICE_PROGRAMS + BASS_PROGRAMS}
    | {p.number for _, progs in PART_FAMILIES.values() for p in progs}
    | {p.number for _, progs, _, _ in CHORD_FAMILIES.values() for p in progs}
)

#: GM drum keys per fine label, in order of preference.
DRUM_KEYS: dict[str, tuple[int, ...]] = {
    "kick": (36, 35),
    "snare": (38, 40, 37),
    "hi-hat": (42, 44, 46),
    "toms": (50, 48, 47, 45, 43, 41),
    "cymbals": (49, 57, 51, 59, 55),
}
_DRUM_KITS = (0, 8, 16, 24, 32, 40)  # Standard, Room, Power, Electronic, Jazz, Brush
DRUM_BANK = 128

# Loudness check: a program is skipped when silent or this far below the soundfont's median.
_TOO_QUIET_DB = 20.0
_SILENT_DB = -75.0
_CHECK_KEYS = (36, 48, 55, 60, 64, 67, 72)
_CHECK_NOTE_S = 0.25

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


def _installed_soundfonts() -> list[Path]:
    """Every .sf2/.sf3 file in the system's soundfont folders, once each, by resolved path."""
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
    return found


def default_soundfonts() -> list[Path]:
    """Installed General MIDI soundfonts: Debian ones (sorted), then the bundled one last.

    The last soundfont of the list is the one reserved for the test split when there are
    several, so by default the test split is rendered with the soundfont that every install
    has, and the training splits with the larger Debian ones. Soundfonts that are not General
    MIDI sets (:func:`is_general_midi`), such as the one-preset drum kits of Debian's
    ``avldrums.lv2-soundfont``, are left out: their one preset would be played as a piano.
    """
    found = []
    for path in _installed_soundfonts():
        try:
            if is_general_midi(path):
                found.append(path)
        except DataError:
            continue  # not a readable soundfont: not ours to use
    bundled = bundled_soundfont()
    if bundled is not None:
        found.append(bundled)
    return found


def _riff_chunks(fh: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, data offset, data size) of the chunks between two offsets of a RIFF file.

    Chunks are padded to an even size, but some SF3 writers leave the pad byte out: the
    padded offset is used only where the unpadded one does not start with a chunk id.
    """
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            return
        cid, size = struct.unpack("<4sI", head)
        yield cid, pos + 8, size
        pos += 8 + size
        if size & 1:
            fh.seek(pos)
            nxt = fh.read(4)
            if not (len(nxt) == 4 and all(32 < c < 127 for c in nxt)):
                pos += 1


def soundfont_presets(path: str | os.PathLike[str]) -> list[tuple[int, int, str]]:
    """``(bank, program, name)`` of every preset of an SF2/SF3 file, read from its headers
    alone (no sample is loaded). Raises DataError when the file is not a soundfont."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
                raise DataError(f"{path} is not a soundfont (no SF2 header)")
            end = 8 + struct.unpack("<I", head[4:8])[0]
            for cid, offset, size in _riff_chunks(fh, 12, end):
                fh.seek(offset)
                if cid != b"LIST" or fh.read(4) != b"pdta":
                    continue
                for sub, sub_offset, sub_size in _riff_chunks(fh, offset + 4, offset + size):
                    if sub != b"phdr":
                        continue
                    fh.seek(sub_offset)
                    data = fh.read(sub_size)
                    records = [data[i : i + 38] for i in range(0, len(data) - 38, 38)]
                    presets = []
                    for rec in records:  # the last record ("EOP") only closes the list
                        name, program, bank = struct.unpack("<20sHH", rec[:24])
                        text = name.split(b"\0", 1)[0].decode("latin-1").strip()
                        presets.append((int(bank), int(program), text))
                    return presets
    except OSError as err:
        raise DataError(f"cannot read soundfont {path}: {err}") from err
    raise DataError(f"{path} is not a soundfont (no preset headers)")


def general_midi_coverage(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(programs the corpus plays that bank 0 of the soundfont has, programs the corpus plays)."""
    bank0 = {program for bank, program, _ in soundfont_presets(path) if bank == 0}
    return len(bank0 & set(_ALL_MELODIC)), len(_ALL_MELODIC)


def is_general_midi(path: str | os.PathLike[str]) -> bool:
    """True when bank 0 of the soundfont has most (3/4) of the programs the corpus plays.

    A General MIDI set has all 128; a drum kit or a single instrument has one or a few, and
    its presets must not stand for General MIDI programs.
    """
    have, need = general_midi_coverage(path)
    return have >= 0.75 * need


def import_tinysoundfont() -> Any:
    try:
        import tinysoundfont
    except ImportError as err:  # pragma: no cover - depends on the install
        raise AqsepError(
            "the corpus builder needs the 'tinysoundfont' package; install it with "
            "`pip install --no-deps tinysoundfont` (its optional pyaudio dependency is only for "
            "live playback)"
        ) from err
    return tinysoundfont


class SynthPool:
    """One loaded synthesizer per soundfont, kept for the life of the process."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._synths: dict[str, tuple[Any, int]] = {}

    def get(self, path: Path) -> tuple[Any, int]:
        key = str(path)
        if key not in self._synths:
            tsf = import_tinysoundfont()
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
        """Render (sample, kind 0=off/1=on, key, velocity) events into ``(n_samples, 2)``
        float32 stereo.

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
        return out


def _phrase(keys: Iterable[int], note: int) -> list[tuple[int, int, int, int]]:
    """Events of ``keys`` played one after the other, ``note`` samples each, velocity 100."""
    ev = []
    for i, k in enumerate(keys):
        ev += [(i * note, 1, k, 100), ((i + 1) * note - 1, 0, k, 0)]
    return ev


def _kit_keys(
    pool: SynthPool, path: Path, bank: int, program: int, key_map: dict[str, tuple[int, ...]]
) -> dict[str, list[int]] | None:
    """The keys of ``key_map`` that sound in a drum kit preset; None without kick, snare and
    hi-hat."""
    note = int(_CHECK_NOTE_S * pool.sample_rate)
    keys: dict[str, list[int]] = {}
    for fine, candidates in key_map.items():
        ok = []
        for key in candidates:
            x = pool.render(path, bank, program, True, _phrase([key], note), 2 * note)
            if rms_db(x) > _SILENT_DB:
                ok.append(key)
        if ok:
            keys[fine] = ok
    return keys if all(f in keys for f in ("kick", "snare", "hi-hat")) else None


def check_soundfont(path: Path, sample_rate: int, pool: SynthPool) -> dict[str, Any]:
    """Measure each program's loudness once and list what is usable.

    Some soundfonts render a few presets silent or far too quietly (the pianos of MuseScore's
    SF3 in tinysoundfont, for one): those programs are skipped for this soundfont.
    """
    synth, sfid = pool.get(path)
    note = int(_CHECK_NOTE_S * sample_rate)
    levels: dict[int, float] = {}
    for prog in _ALL_MELODIC:
        if synth.sfpreset_name(sfid, 0, prog) is None:
            continue
        phrase = _phrase(_CHECK_KEYS, note)
        x = pool.render(path, 0, prog, False, phrase, note * (len(_CHECK_KEYS) + 1))
        levels[prog] = rms_db(x)
    if not levels:
        raise DataError(f"soundfont {path} has no General MIDI melodic presets")
    median = float(np.median(list(levels.values())))
    usable = sorted(p for p, v in levels.items() if v > _SILENT_DB and v > median - _TOO_QUIET_DB)
    kits: dict[int, dict[str, list[int]]] = {}
    for kit in _DRUM_KITS:
        if synth.sfpreset_name(sfid, DRUM_BANK, kit) is None:
            continue
        keys = _kit_keys(pool, path, DRUM_BANK, kit, DRUM_KEYS)
        if keys is not None:
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
# Sampled drum kits
# ---------------------------------------------------------------------------------------------

#: Keys of a drum-kit soundfont such as the avldrums.lv2 kits, which follow General MIDI for
#: kick (36), snare (38, 40 edge, 37 side stick), hi-hat (42, 44, 46), toms (47/45 tom edge and
#: centre, 43/41 floor tom edge and centre, high to low) and cymbals (49 and 57 crashes, 51
#: ride, 59 ride shank, 55 splash), but not for 48 and 50 (a hi-hat swish and a crash choke).
KIT_DRUM_KEYS: dict[str, tuple[int, ...]] = {
    "kick": (36, 35),
    "snare": (38, 40, 37),
    "hi-hat": (42, 44, 46),
    "toms": (47, 45, 43, 41),
    "cymbals": (49, 57, 51, 59, 55),
}


def default_drum_kits() -> list[Path]:
    """Installed sampled drum kits: the soundfonts of Debian's ``avldrums.lv2-soundfont``
    (``*_LV2.sf2`` in /usr/share/sounds/sf2, multi-velocity recordings of acoustic kits,
    CC-BY-SA), sorted by name. With two or more, the last one is kept for the test split."""
    kits = []
    for path in _installed_soundfonts():
        if not path.name.endswith("_LV2.sf2"):
            continue
        try:
            if not is_general_midi(path):
                kits.append(path)
        except DataError:
            continue
    return kits


def check_drum_kit(path: Path, pool: SynthPool) -> dict[str, Any]:
    """The keys that sound in a drum-kit soundfont (its first preset, bank 0 program 0 for
    the avldrums kits); raises DataError when kick, snare or hi-hat is missing."""
    presets = soundfont_presets(path)
    if not presets:
        raise DataError(f"drum kit {path.name} has no preset")
    bank, program, preset_name = min(presets)
    keys = _kit_keys(pool, path, bank, program, KIT_DRUM_KEYS)
    if keys is None:
        raise DataError(
            f"drum kit {path.name} does not play a kick, a snare and a hi-hat on the General "
            "MIDI keys 36, 38 and 42"
        )
    return {
        "name": path.name,
        "path": str(path),
        "preset": preset_name,
        "bank": bank,
        "program": program,
        "keys": keys,
    }


def pick_program(
    rng: np.random.Generator,
    programs: Sequence[Program],
    usable: set[int],
    median: float | None = None,
) -> Program | None:
    cands = [p for p in programs if p.number in usable]
    if not cands:
        return None
    if median is not None:
        close = [p for p in cands if abs(p.center - median) <= 10]
        cands = close or cands
    return cands[int(rng.integers(len(cands)))]
